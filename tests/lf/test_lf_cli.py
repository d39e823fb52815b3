"""``swift-ext lf``: the config's swift_ext section, the checks on it, and the torchrun redirection.

The training run itself (with and without torchrun) is in test_lf_train_e2e.py.
"""

from __future__ import annotations

import json
import os
import types

import pytest
from lf_helpers import require_llamafactory, unset_env

require_llamafactory()

from swift_ext.llamafactory import ENV_VAR, ParityOptions, cli, current_options  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    unset_env(monkeypatch, ENV_VAR, "USE_V1", "USE_RAY", "FORCE_TORCHRUN", "NPROC_PER_NODE")
    yield


def _write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_section_is_taken_out_and_overrides_merge(tmp_path):
    path = _write(
        tmp_path,
        "template: qwen3_6_parity\ncutoff_len: 2048\nswift_ext:\n  truncation: drop\n"
        "  chat_template_kwargs:\n    enable_thinking: false\n",
    )
    config = cli.load_config(path, ["cutoff_len=512", "swift_ext.on_error=skip"])
    lf_config, options = cli.split_config(config)
    assert lf_config == {"template": "qwen3_6_parity", "cutoff_len": 512}
    assert options == ParityOptions(truncation="drop", on_error="skip", chat_template_kwargs={"enable_thinking": False})
    assert ParityOptions.from_mapping(json.loads(options.to_json())) == options


@pytest.mark.parametrize(
    "config, message",
    [
        ({"template": "qwen3_6_parity", "enable_thinking": False}, "chat_template_kwargs"),
        ({"template": "qwen3_6_parity", "preserve_thinking": True}, "history_reasoning"),
        ({"template": "qwen3_6_parity", "swift_ext": {"bogus": 1}}, "unknown key"),
        ({"template": "qwen3_6_parity", "swift_ext": {"truncation": "left"}}, "truncation"),
        ({"template": "qwen3", "swift_ext": {"strict": True}}, "parity templates only"),
        ({"template": "qwen3_6_parity", "swift_ext": {"family": "llama3"}}, "contradicts"),
    ],
)
def test_config_mistakes_are_reported(config, message):
    with pytest.raises(cli.UsageError, match=message):
        cli.split_config(config)


def test_usage_errors_exit_2(tmp_path, capsys, monkeypatch):
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "swift-ext lf COMMAND" in capsys.readouterr().out
    assert cli.main(["bogus"]) == 2
    assert cli.main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad = _write(tmp_path, "template: llama3_parity\nswift_ext:\n  reasoning: drop\n")
    assert cli.main(["train", bad]) == 2
    assert "unknown key" in capsys.readouterr().err
    monkeypatch.setenv("USE_V1", "1")
    assert cli.main(["train", bad]) == 2
    assert "USE_V1" in capsys.readouterr().err


def test_options_reach_child_processes_through_the_environment(monkeypatch):
    from swift_ext.llamafactory import configure

    configure(reasoning_policy="drop", stop_strings=["<|im_end|>"])
    assert json.loads(os.environ[ENV_VAR])["reasoning_policy"] == "drop"
    assert current_options() == ParityOptions.from_mapping({"reasoning_policy": "drop", "stop_strings": ["<|im_end|>"]})


def test_torchrun_workers_run_the_registering_entry(monkeypatch):
    launcher = types.SimpleNamespace(__file__="/site-packages/llamafactory/launcher.py")
    cli._redirect_torchrun(launcher)
    assert launcher.__file__.endswith(os.path.join("swift_ext", "llamafactory", "_launch.py"))
    assert os.path.isfile(launcher.__file__)
    source = open(launcher.__file__, encoding="utf-8").read()
    assert "register()" in source and "run_exp()" in source
    # LLaMA-Factory still builds its torchrun command from the launcher module's __file__.
    import inspect

    from llamafactory import launcher as lf_launcher

    assert "file_name=__file__" in inspect.getsource(lf_launcher.launch)


def test_cpu_torchrun_gets_one_process_and_the_venv_torchrun(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin")
    cli._prepare_torchrun_env()
    import torch

    if not torch.cuda.is_available():
        assert os.environ["NPROC_PER_NODE"] == "1"
    import sys

    if os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")):
        assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
