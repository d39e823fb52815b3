"""``swift-ext lf train cfg.yaml [key=value ...]``: LLaMA-Factory with the parity templates.

1. Reads the config as LLaMA-Factory does (YAML or JSON, ``key=value`` overrides merged
   by OmegaConf), takes out the ``swift_ext:`` section (LLaMA-Factory rejects unknown
   keys) and writes the rest to a temporary config that LLaMA-Factory reads.
2. Puts the section into ``SWIFT_EXT_LF_OPTIONS``, which every child process inherits.
3. Registers the parity templates and runs LLaMA-Factory's own launcher. When that
   launcher re-launches itself under torchrun (several devices, ``FORCE_TORCHRUN=1``), it
   starts ``llamafactory/launcher.py`` in each worker, a file that registers nothing;
   this CLI points the launcher's ``__file__`` at ``swift_ext/llamafactory/_launch.py``,
   so the workers register before they parse their arguments. LLaMA-Factory's own
   handling of ``NNODES``, ``NPROC_PER_NODE``, ``MASTER_ADDR``, ``RDZV_ID``... is kept.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from ..errors import UnknownFamilyError
from ..families import GENERIC, parity_template_of

USAGE = """\
usage: swift-ext lf COMMAND CONFIG.(yaml|json) [key=value ...]

Runs LLaMA-Factory's COMMAND (train, chat, export, webchat, api) with swift_ext's
parity templates registered: template: <family>_parity or hf_parity. The config's
optional swift_ext: section sets family, strict, reasoning_policy, history_reasoning,
stop_strings, chat_template_kwargs, truncation (turns|drop|error), on_error (raise|skip).
See docs/llamafactory.md.
"""

COMMANDS = ("train", "chat", "export", "webchat", "api")
SECTION = "swift_ext"
_THINKING_KEYS = {
    "enable_thinking": "swift_ext.chat_template_kwargs (with the template's own switch, e.g. enable_thinking)",
    "preserve_thinking": "swift_ext.history_reasoning: keep",
}


class UsageError(Exception):
    """A problem with the command line or the config, reported without a traceback."""


def load_config(path: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config as LLaMA-Factory's ``read_args`` builds it: file merged with ``key=value`` overrides."""
    import json

    from omegaconf import OmegaConf

    if not os.path.isfile(path):
        raise UsageError(f"config file not found: {path}")
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            base = OmegaConf.create(json.load(fh))
    else:
        base = OmegaConf.load(path)
    merged = OmegaConf.merge(base, OmegaConf.from_cli(list(overrides)))
    config = OmegaConf.to_container(merged, resolve=True)
    if not isinstance(config, dict):
        raise UsageError(f"{path} does not hold a mapping of arguments")
    return config


def split_config(config: dict[str, Any]):
    """(LLaMA-Factory's config, ParityOptions) with the checks that need both."""
    from .options import ParityOptions

    config = dict(config)
    section = config.pop(SECTION, None) or {}
    if not isinstance(section, dict):
        raise UsageError(f"the {SECTION} section must be a mapping")
    try:
        options = ParityOptions.from_mapping(section)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    template = str(config.get("template") or "")
    if template.endswith("_parity"):
        for key, instead in _THINKING_KEYS.items():
            if key in config:
                raise UsageError(
                    f"{key} is LLaMA-Factory's switch for its slot templates; parity templates render the model's "
                    f"own chat template: use {instead}"
                )
        if options.family and template != GENERIC.parity_template and _parity_template(options.family) != template:
            raise UsageError(f"swift_ext.family={options.family!r} contradicts template: {template}")
    elif section:
        raise UsageError(f"the {SECTION} section applies to parity templates only, and template is {template!r}")
    return config, options


def _redirect_torchrun(launcher: Any) -> None:
    """Make LLaMA-Factory's torchrun command start workers that register the parity templates."""
    from . import _launch

    target = os.path.abspath(_launch.__file__)
    if re.search(r"\s", target):  # LLaMA-Factory splits its command line on whitespace
        target = "-m swift_ext.llamafactory._launch"
    launcher.__file__ = target


def _prepare_torchrun_env() -> None:
    """LLaMA-Factory runs a bare ``torchrun`` and, with no accelerator, asks for 0 processes per node."""
    bindir = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(bindir, "torchrun")):
        path = os.environ.get("PATH", "")
        if path.split(os.pathsep)[:1] != [bindir]:
            os.environ["PATH"] = bindir + (os.pathsep + path if path else "")
    if "NPROC_PER_NODE" not in os.environ:
        from llamafactory.extras.misc import get_device_count

        if get_device_count() == 0:
            os.environ["NPROC_PER_NODE"] = "1"


INSTALL = ('pip install torch==2.13.0 && pip install -c constraints.txt -e ".[test,llamafactory]" '
           "&& pip uninstall -y torchvision torchaudio")
"""README, "LLaMA-Factory 0.9.5": its pins conflict with ms-swift's, so it gets an environment of its own."""


def _require_llamafactory() -> None:
    """One line saying how to install LLaMA-Factory, instead of the ModuleNotFoundError its config reader raises."""
    import importlib.util

    for module in ("llamafactory", "omegaconf"):
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"LLaMA-Factory is not installed in this environment (no module {module!r}); it needs "
                             f"an environment of its own, from a clone of swift-ext: {INSTALL}")


def main(argv: Sequence[str] | None = None) -> int:
    """``swift-ext lf``: ``argv`` is what follows ``lf`` (``["train", "cfg.yaml", ...]``). Returns an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    tmpdir = None
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
        _require_llamafactory()
        for var, why in (("USE_V1", "LLaMA-Factory v1 has its own renderer"),
                         ("USE_RAY", "Ray workers do not run swift_ext's registration")):
            if os.environ.get(var, "0").lower() in ("1", "true", "y"):
                raise UsageError(f"{var} is set: not supported by swift-ext lf ({why})")

        from . import configure, register

        if rest and rest[0].endswith((".yaml", ".yml", ".json")):
            config, options = split_config(load_config(rest[0], rest[1:]))
            import yaml

            tmpdir = tempfile.mkdtemp(prefix="swift-ext-lf-")
            config_path = os.path.join(tmpdir, "config.yaml")
            if re.search(r"\s", config_path):
                raise UsageError(f"the temporary directory {tmpdir!r} has whitespace; set TMPDIR to a path without")
            with open(config_path, "w", encoding="utf-8") as fh:
                yaml.safe_dump(config, fh, sort_keys=False, allow_unicode=True)
            lf_args = [config_path]
        else:
            from .options import current_options

            options, lf_args = current_options(), rest
        configure(options)
        try:
            register()
        except RuntimeError as exc:  # an environment problem (a broken torchvision), said plainly
            raise UsageError(str(exc)) from None

        from llamafactory import launcher

        if command == "train":
            _redirect_torchrun(launcher)
            _prepare_torchrun_env()
        saved_argv = sys.argv
        sys.argv = ["llamafactory-cli", command, *lf_args]
        try:
            launcher.launch()
        finally:
            sys.argv = saved_argv
        return 0
    except UsageError as exc:
        print(f"swift-ext lf: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except subprocess.CalledProcessError as exc:
        print(f"swift-ext lf: the distributed run failed with exit code {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())


def _parity_template(family: str) -> str:
    try:
        return parity_template_of(family)
    except UnknownFamilyError as exc:
        raise UsageError(f"swift_ext.family: {exc.detail}") from None
