"""The container images and cluster manifests in docker/, checked by parsing (no Docker engine here).

What must hold: the GPU image pins a PyTorch build that still runs on V100s (sm_70), both images
install avtok exactly as README's set-up does and start `avtok`, and the compose/KubeRay clusters
give Ray the shared memory, shared volume and auth token it needs.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"

# PyTorch CUDA wheel indexes whose Linux x86 builds include sm_70 (Volta, V100) kernels. cu126 is the
# newest: cu128 builds dropped sm_70 from release 2.11 on, and CUDA 13.x (cu130, cu132, ...) cannot
# target Volta at all.
SM70_INDEXES = {"cu118", "cu121", "cu124", "cu126"}
NO_SM70_INDEXES = re.compile(r"^cu(128|129|13\d)$")
# torch releases published on the cu126 index: from 2.6 on; PyTorch's RFC for 2.15 (pytorch#190385)
# removes the CUDA 12.6 builds, i.e. the last V100-capable wheels are 2.14.x.
CU126_TORCH = ((2, 6), (2, 14))
# Python minor version that each base image's python3 has (Ray needs one minor version per cluster).
BASE_PYTHON = {"ubuntu24.04": "3.12", "ubuntu22.04": "3.10"}


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    assert not buf, f"{path}: dangling continuation line"
    return out


def shell_commands(instructions: list[tuple[str, str]]) -> list[list[str]]:
    """Every simple command of every RUN, split on && and ;, as argv lists, in order."""
    cmds = []
    for word, arg in instructions:
        if word != "RUN":
            continue
        lexer = shlex.shlex(arg, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", ";", "||"):
                if argv:
                    cmds.append(argv)
                argv = []
            else:
                argv.append(token)
    return cmds


def pip_installs(instructions: list[tuple[str, str]]) -> list[list[str]]:
    """The arguments of every `pip install` (or `python -m pip install`), in order."""
    out = []
    for argv in shell_commands(instructions):
        if argv[:2] == ["pip", "install"]:
            out.append(argv[2:])
        elif argv[1:4] == ["-m", "pip", "install"]:
            out.append(argv[4:])
    return out


def readme_setup() -> tuple[str, list[str]]:
    """README's set-up line: the pinned torch version and the avtok install arguments."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"pip install torch==(\S+) && pip install ([^&\n]+?) &&", text)
    assert m, "README's set-up line (pip install torch==X && pip install ... &&) not found"
    return m.group(1), shlex.split(m.group(2))


def index_url(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--index-url":
            return args[i + 1]
        if a.startswith("--index-url="):
            return a.split("=", 1)[1]
    return None


def pyproject() -> str:
    # Read with regexes: tomllib is 3.11+ and avtok supports 3.10.
    return (ROOT / "pyproject.toml").read_text()


def size_bytes(text: str | int) -> int:
    """'4gb', '4Gi', '2000000000' -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(\d+)\s*([kmgt]?)(i?b?)", str(text).strip().lower())
    assert m, f"cannot read size {text!r}"
    return int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_")


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def image(request):
    path = DOCKER / f"Dockerfile.{request.param}"
    return request.param, parse_dockerfile(path)


def test_gpu_image_pins_a_torch_cuda_pair_that_runs_on_v100():
    instr = parse_dockerfile(DOCKER / "Dockerfile.gpu")
    bases = [arg for word, arg in instr if word == "FROM"]
    assert len(bases) == 1
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-\w+-(ubuntu[\d.]+)", bases[0])
    assert m, f"GPU base should be an nvidia/cuda 12.x image, got {bases[0]}"
    assert int(m.group(1)) == 12, "CUDA 13 dropped Volta (sm_70): the V100 image must stay on CUDA 12.x"
    torch_installs = [a for a in pip_installs(instr) if any(x.startswith("torch==") for x in a)]
    assert len(torch_installs) == 1
    url = index_url(torch_installs[0])
    assert url and url.startswith("https://download.pytorch.org/whl/"), url
    flavour = url.rstrip("/").rsplit("/", 1)[1]
    # The acceptance criterion: a PyTorch/CUDA pair that still ships sm_70 kernels (cu126 here).
    assert flavour in SM70_INDEXES and not NO_SM70_INDEXES.match(flavour), (
        f"{flavour} wheels have no sm_70 (V100) kernels; use cu126")
    assert flavour == "cu126"
    (pin,) = [x.split("==", 1)[1] for x in torch_installs[0] if x.startswith("torch==")]
    major_minor = tuple(int(x) for x in pin.split(".")[:2])
    assert CU126_TORCH[0] <= major_minor <= CU126_TORCH[1], (
        f"torch {pin} has no cu126 (sm_70) build; V100 support needs torch 2.6 ... 2.14")
    # The wheel's CUDA must not be newer than the base image's (the build also asserts torch.version.cuda).
    wheel_minor = int(flavour[4:])
    assert (12, wheel_minor) <= (int(m.group(1)), int(m.group(2)))
    assert any("torch.version.cuda" in arg and "12.6" in arg for word, arg in instr if word == "RUN")


def test_cpu_image_uses_the_cpu_torch_build():
    instr = parse_dockerfile(DOCKER / "Dockerfile.cpu")
    torch_installs = [a for a in pip_installs(instr) if any(x.startswith("torch==") for x in a)]
    assert len(torch_installs) == 1
    assert index_url(torch_installs[0]) == "https://download.pytorch.org/whl/cpu"


def test_images_install_avtok_like_the_readme(image):
    name, instr = image
    torch_version, avtok_args = readme_setup()
    installs = pip_installs(instr)
    torch_at = [i for i, a in enumerate(installs) if f"torch=={torch_version}" in a]
    assert torch_at, f"{name}: torch=={torch_version} (README's pin) is not installed"
    avtok_at = [i for i, a in enumerate(installs) if a == avtok_args]
    assert avtok_at, f"{name}: no `pip install {' '.join(avtok_args)}` as in README"
    # torch first, so that avtok's own `torch>=` requirement is met by the pinned CUDA/CPU build.
    assert torch_at[0] < avtok_at[0]
    # CI installs the same pin.
    assert f"torch=={torch_version}" in (ROOT / ".ci" / "run").read_text()
    # The editable install needs every folder that pyproject maps into the avtok namespace.
    folders = {p.split("/")[0] for p in re.findall(r'^"avtok\.[\w.]+" = "([\w/]+)"', pyproject(), flags=re.M)}
    assert folders == {"pipeline", "model", "cli"}
    copied = set()
    for word, arg in instr:
        if word == "COPY":
            srcs = shlex.split(arg)[:-1]
            copied |= {s.removeprefix("./").rstrip("/") for s in srcs}
    assert folders | {"pyproject.toml", "README.md"} <= copied, f"{name}: COPY misses {folders - copied}"
    for folder in folders:
        assert (ROOT / folder).is_dir()


def test_build_context_admits_what_the_images_copy(image):
    name, instr = image
    rules = [ln.strip() for ln in (DOCKER / f"Dockerfile.{name}.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*", "the context should be an allowlist (no data or runs sent to the builder)"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for word, arg in instr:
        if word == "COPY":
            for src in shlex.split(arg)[:-1]:
                assert src.removeprefix("./").rstrip("/") in allowed, f"{name}: COPY {src} is excluded"


def test_images_start_avtok(image):
    name, instr = image
    entry = [arg for word, arg in instr if word == "ENTRYPOINT"]
    assert len(entry) == 1
    assert json.loads(entry[0]) == ["avtok"], f"{name}: entry point should be exec-form [\"avtok\"]"
    assert re.search(r'^avtok = "avtok\.cli\.main:cli"$', pyproject(), flags=re.M)
    # The build fails early if the console script is broken.
    assert any(argv[:2] == ["avtok", "--help"] for argv in shell_commands(instr))


def test_both_images_share_one_python_minor_version():
    gpu_base = next(arg for w, arg in parse_dockerfile(DOCKER / "Dockerfile.gpu") if w == "FROM")
    cpu_base = next(arg for w, arg in parse_dockerfile(DOCKER / "Dockerfile.cpu") if w == "FROM")
    gpu_py = BASE_PYTHON[gpu_base.rsplit("-", 1)[1]]
    m = re.fullmatch(r"python:(\d+\.\d+)-slim-\w+", cpu_base)
    assert m, cpu_base
    assert gpu_py == m.group(1) == "3.12"
    m = re.search(r'^requires-python = ">=3\.(\d+)"$', pyproject(), flags=re.M)
    assert m and int(m.group(1)) <= 12, "the images' Python 3.12 must satisfy requires-python"


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name:
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def test_compose_cluster_has_head_workers_shared_volume_and_shm():
    spec = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = spec["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert (DOCKER / head["build"]["context"] / head["build"]["dockerfile"]).resolve().is_file()
    assert head["image"] == worker["image"] == "avtok-cpu:latest"
    assert worker["build"] == head["build"]  # nothing to pull from a registry
    h_argv, w_argv = head["entrypoint"], worker["entrypoint"]
    assert h_argv[:3] == ["ray", "start", "--head"] and "--block" in h_argv
    assert w_argv[:2] == ["ray", "start"] and "--block" in w_argv and "--head" not in w_argv
    assert _option(w_argv, "--address") == f"ray-head:{_option(h_argv, '--port')}"
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    for svc in (head, worker):
        # Ray's object store lives in /dev/shm: it must fit, or Ray falls back to disk / refuses to start.
        assert size_bytes(svc["shm_size"]) > size_bytes(_option(svc["entrypoint"], "--object-store-memory"))
        assert "avtok-data:/data" in svc["volumes"]
        env = svc["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
    assert "avtok-data" in spec["volumes"]
    guide = (DOCKER / "README.md").read_text()
    assert "avtok extract --videos /data/videos --out /data/extracted --address ray-head:6379" in guide
    assert "shm" in guide


def test_kuberay_manifest():
    docs = list(yaml.safe_load_all((DOCKER / "kuberay.yaml").read_text()))
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    groups = [("head", cluster["spec"]["headGroupSpec"])] + [
        (g["groupName"], g) for g in cluster["spec"]["workerGroupSpecs"]]
    images = {}
    for name, group in groups:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        images[name] = container["image"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory"
        assert size_bytes(shm["sizeLimit"]) > int(group["rayStartParams"]["object-store-memory"])
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        assert container["readinessProbe"]["exec"]["command"][:2] == ["ray", "health-check"]
    assert images == {"head": "avtok-cpu:latest", "cpu": "avtok-cpu:latest", "gpu": "avtok-gpu:latest"}
    gpu = next(g for n, g in groups if n == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_readme_has_the_scale_sections():
    text = (ROOT / "README.md").read_text()
    heads = re.findall(r"^## (.+)$", text, flags=re.M)
    assert "Running on a Ray cluster" in heads and "Training on many GPUs" in heads
    assert heads.index("Training on many GPUs") < heads.index("Layout")
    assert "--address" in text and "torchrun" in text and "--resume" in text
