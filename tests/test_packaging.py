"""What an installed wheel holds and how the package's modules may import one another."""

import ast
import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modeling_dino_speech"
#: The files a checkpoint carries (`save_pretrained` copies them for `trust_remote_code`): flat, single-dot imports.
MODEL_FILES = (
    "configuration_dino_speech.py",
    "feature_extraction_dino_speech.py",
    "modeling_dino_speech.py",
    "resnet.py",
    "ecapa_tdnn.py",
    "pooling.py",
    "dino_head.py",
    "losses.py",
    "resampling.py",
    "pipeline_dino_speech.py",
)
CORE_REQUIREMENTS = {"torch", "transformers", "safetensors", "numpy", "soundfile", "soxr"}


def _imports(path: Path):
    """(module, level) of every import statement in `path`, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


def _resolve(path: Path, module: str, level: int) -> str:
    """The absolute dotted name an import in `path` refers to."""
    if level == 0:
        return module
    parts = list(path.relative_to(ROOT).with_suffix("").parts)[:-level]
    return ".".join(parts + ([module] if module else []))


def test_nothing_in_the_package_imports_eval_or_train():
    offenders = [
        f"{p.relative_to(ROOT)}: {m}"
        for p in PACKAGE.rglob("*.py")
        for m, level in _imports(p)
        if level == 0 and m.split(".")[0] in ("eval", "train")
    ]
    assert not offenders, offenders


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        (
            "modeling_dino_speech/training",
            ("modeling_dino_speech.evaluation", "modeling_dino_speech.recipes", "modeling_dino_speech.cli"),
        ),
        (
            "modeling_dino_speech/data",
            (
                "modeling_dino_speech.training",
                "modeling_dino_speech.evaluation",
                "modeling_dino_speech.recipes",
                "modeling_dino_speech.cli",
            ),
        ),
    ],
)
def test_imports_flow_one_way(layer, forbidden):
    offenders = []
    for path in (ROOT / layer).rglob("*.py"):
        for module, level in _imports(path):
            target = _resolve(path, module, level)
            if target.startswith(forbidden):
                offenders.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not offenders, offenders


def test_model_files_are_flat_and_import_only_each_other():
    allowed = {"torch", "numpy", "transformers", "soxr", "soundfile"} | set(sys.stdlib_module_names)
    for name in MODEL_FILES:
        path = PACKAGE / name
        for module, level in _imports(path):
            if level:
                assert level == 1 and module in {n[:-3] for n in MODEL_FILES}, f"{name}: from {'.' * level}{module}"
            else:
                assert module.split(".")[0] in allowed, f"{name} imports {module}, which a checkpoint does not carry"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=600,
    )
    (found,) = out.glob("dino_speech-*.whl")
    return found


def test_wheel_installs_only_the_package_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"modeling_dino_speech"}
    for needed in [
        "modeling_dino_speech/model_card.md",
        "modeling_dino_speech/cli.py",
        *(
            f"modeling_dino_speech/metrics/{m}/{m}.py"
            for m in ("eer", "min_dcf", "micro_f1", "macro_f1", "unweighted_accuracy")
        ),
    ]:
        assert needed in names


def test_wheel_core_is_slim_and_the_console_script_is_declared(wheel):
    archive = zipfile.ZipFile(wheel)
    info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = email.message_from_bytes(archive.read(info))
    core = {
        r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for r in metadata.get_all("Requires-Dist")
        if "extra ==" not in r
    }
    assert core == CORE_REQUIREMENTS
    torch_requirement = next(r for r in metadata.get_all("Requires-Dist") if r.startswith("torch") and "extra" not in r)
    assert "==" not in torch_requirement and "<" not in torch_requirement, torch_requirement
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"train", "eval", "faiss", "all", "dev"} <= extras
    entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "dino-speech = modeling_dino_speech.cli:main" in entry_points


def test_metrics_load_from_any_directory(tmp_path, monkeypatch):
    import evaluate

    from modeling_dino_speech.metrics import metric_path

    monkeypatch.chdir(tmp_path)
    result = evaluate.load(metric_path("eer")).compute(predictions=[0.9, 0.8, 0.3, 0.1], references=[1, 0, 1, 0])
    assert result == {"eer": 0.5, "threshold": 0.8}
