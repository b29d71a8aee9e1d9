"""docker/: the images, the compose cluster and the KubeRay manifest, checked for what makes them work.

There is no Docker engine here, so nothing is built. Instead the files are parsed (dockerfile-parse,
yaml) and checked against the repository and the tools they drive: every file an image copies exists
and passes the build context's allowlist; the images install the torch build that README.md and
.ci/run install, then avtok with extras pyproject.toml declares; the entry point is avtok's console
script; every `ray` command line is one Ray's own CLI accepts; shared memory exceeds the object
store; and every `avtok` command line shown in README.md or docker/README.md names a real
sub-command and real options.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from fnmatch import fnmatch
from pathlib import Path

import click
import pytest
import yaml
from dockerfile_parse import DockerfileParser

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
GUIDES = (ROOT / "README.md", DOCKER / "README.md")

# PyTorch CUDA wheel indexes whose Linux x86 builds include sm_70 (V100) kernels. cu126 is the newest:
# cu128 builds dropped sm_70 from release 2.11 on, and CUDA 13 cannot target Volta at all.
SM70_INDEXES = {"cu118", "cu121", "cu124", "cu126"}
# torch releases on the cu126 index: 2.6 up to 2.14 (PyTorch plans to drop CUDA 12.6 builds in 2.15).
CU126_TORCH = ((2, 6), (2, 14))
# python3's minor version in each base image (Ray refuses nodes of different Python minor versions).
BASE_PYTHON = {"ubuntu24.04": "3.12", "ubuntu22.04": "3.10"}


# --- parsing helpers -------------------------------------------------------------------------------


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, value) of docker/Dockerfile.NAME in order, comments dropped."""
    with open(DOCKER / f"Dockerfile.{name}", "rb") as f:
        parser = DockerfileParser(fileobj=f)
        return [(s["instruction"], s["value"]) for s in parser.structure if s["instruction"] != "COMMENT"]


def shell_commands(text: str) -> list[list[str]]:
    """Every simple command of a shell script, as argv lists: lines joined at `\\`, comments dropped,
    split at `&&`, `||`, `;` and `|`. `$(which avtok)` counts as `avtok`."""
    text = text.replace("\\\n", " ").replace("$(which avtok)", "avtok")
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|"):
                if argv:
                    out.append(argv)
                argv = []
            else:
                argv.append(token)
    return out


def bash_blocks(path: Path) -> list[str]:
    """The bodies of the ```bash fences of a Markdown file."""
    blocks, body, inside = [], [], False
    for line in path.read_text().splitlines():
        fence = line.strip()
        if not inside and fence in ("```bash", "```sh"):
            inside, body = True, []
        elif inside and fence == "```":
            inside = False
            blocks.append("\n".join(body))
        elif inside:
            body.append(line)
    return blocks


def guide_commands(path: Path) -> list[list[str]]:
    return [argv for block in bash_blocks(path) for argv in shell_commands(block)]


def pip_installs(commands: list[list[str]]) -> list[list[str]]:
    """Arguments of every `pip install` / `python -m pip install`, flags like -q dropped."""
    out = []
    for argv in commands:
        if argv[:2] == ["pip", "install"]:
            args = argv[2:]
        elif len(argv) > 3 and argv[1:4] == ["-m", "pip", "install"]:
            args = argv[4:]
        else:
            continue
        out.append([a for a in args if a not in ("-q", "--quiet", "--upgrade", "-U")])
    return out


def torch_pins(commands: list[list[str]]) -> set[str]:
    return {a.split("==", 1)[1] for args in pip_installs(commands) for a in args if a.startswith("torch==")}


def run_commands(name: str) -> list[list[str]]:
    return [argv for word, value in instructions(name) if word == "RUN" for argv in shell_commands(value)]


def option(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name:
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def size_bytes(text: str | int) -> int:
    """'4gb', '4Gi', '2000000000' -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(\d+)\s*([kmgt]?)(i?b?)", str(text).strip().lower())
    assert m, f"cannot read size {text!r}"
    return int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_")


def ray_cli(argv: list[str]) -> click.Context:
    """Parse a `ray SUB ...` command line with Ray's own click CLI (fails on unknown options)."""
    from ray.scripts.scripts import cli

    assert argv[0] == "ray", argv
    command = cli.commands.get(argv[1])
    assert command is not None, f"`ray {argv[1]}` is not a Ray command"
    return command.make_context(argv[1], list(argv[2:]))


def avtok_command(argv: list[str]) -> tuple[click.Command, list[str]]:
    """(the click command an `avtok ...` argv runs, its remaining arguments)."""
    from avtok.cli.main import cli

    command: click.Command = cli
    args = list(argv)
    ctx = click.Context(cli)
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(ctx, args[0])
        assert sub is not None, f"`avtok {' '.join(argv)}`: no sub-command {args[0]!r}"
        command, args = sub, args[1:]
    return command, args


# --- images ----------------------------------------------------------------------------------------


@pytest.fixture(params=["gpu", "cpu"])
def image(request) -> str:
    return request.param


def test_gpu_image_pins_a_torch_cuda_pair_that_runs_on_v100():
    (base,) = [v for w, v in instructions("gpu") if w == "FROM"]
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-\w+-(ubuntu[\d.]+)", base)
    assert m, f"the GPU base should be an nvidia/cuda image, got {base}"
    assert int(m.group(1)) == 12, "CUDA 13 dropped Volta (sm_70): the V100 image must stay on CUDA 12"
    (torch_args,) = [a for a in pip_installs(run_commands("gpu")) if any(x.startswith("torch==") for x in a)]
    index = option(torch_args, "--index-url")
    assert index and index.startswith("https://download.pytorch.org/whl/"), index
    flavour = index.rstrip("/").rsplit("/", 1)[1]
    assert flavour in SM70_INDEXES, f"{flavour} wheels have no sm_70 (V100) kernels"
    (pin,) = torch_pins(run_commands("gpu"))
    assert CU126_TORCH[0] <= tuple(int(x) for x in pin.split(".")[:2]) <= CU126_TORCH[1]
    # the wheel's CUDA must not be newer than the base image's
    assert (12, int(flavour[4:])) <= (int(m.group(1)), int(m.group(2)))


def test_cpu_image_uses_the_cpu_torch_build():
    (torch_args,) = [a for a in pip_installs(run_commands("cpu")) if any(x.startswith("torch==") for x in a)]
    assert option(torch_args, "--index-url") == "https://download.pytorch.org/whl/cpu"


def test_images_ci_and_readme_install_the_same_torch():
    readme = torch_pins(guide_commands(ROOT / "README.md"))
    ci = torch_pins(shell_commands((ROOT / ".ci" / "run").read_text()))
    assert len(readme) == 1 and len(ci) == 1, (readme, ci)
    assert torch_pins(run_commands("gpu")) == torch_pins(run_commands("cpu")) == readme == ci


def test_image_installs_avtok_after_copying_what_pyproject_packages(image):
    instr = instructions(image)
    installs = [(i, args) for i, (w, v) in enumerate(instr) if w == "RUN"
                for args in pip_installs(shell_commands(v))]
    torch_at = min(i for i, args in installs if any(a.startswith("torch==") for a in args))
    project = [(i, args) for i, args in installs if "-e" in args]
    assert len(project) == 1, f"{image}: expected one editable install of the project, got {project}"
    at, args = project[0]
    assert torch_at < at, "torch first, so that avtok's `torch>=` requirement is met by the pinned build"
    target = args[args.index("-e") + 1]
    m = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
    assert m, f"{image}: installs {target!r}, not the project in the working directory"
    extras = set(m.group(1).split(",")) if m.group(1) else set()
    assert extras <= set(pyproject()["project"]["optional-dependencies"])
    # CI installs the project with the same extras
    ci_targets = [a[a.index("-e") + 1] for a in pip_installs(shell_commands((ROOT / ".ci" / "run").read_text()))
                  if "-e" in a]
    assert ci_targets == [target]
    # everything the install needs was copied into the working directory before it
    needed = {"pyproject.toml", "README.md"} | {p.split("/")[0] for p in
                                                pyproject()["tool"]["setuptools"]["package-dir"].values()}
    copied = {src.removeprefix("./").rstrip("/") for i, (w, v) in enumerate(instr) if w == "COPY" and i < at
              for src in shlex.split(v)[:-1]}
    assert needed <= copied, f"{image}: not copied before the install: {needed - copied}"


def test_build_context_admits_every_copied_file(image):
    rules = [ln.strip() for ln in (DOCKER / f"Dockerfile.{image}.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]

    def included(path: str) -> bool:  # Docker's rule: the last matching pattern wins
        keep = True
        for rule in rules:
            pattern = rule.removeprefix("!").rstrip("/")
            if fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = rule.startswith("!")
        return keep

    assert not included("runs/x/last.pt") and not included(".venv/bin/python"), "the context should be an allowlist"
    for word, value in instructions(image):
        if word == "COPY":
            for src in shlex.split(value)[:-1]:
                src = src.removeprefix("./").rstrip("/")
                assert (ROOT / src).exists(), f"{image}: COPY {src}: no such file in the repository"
                assert included(src), f"{image}: COPY {src} is excluded by the .dockerignore"


def test_image_runs_the_avtok_console_script_from_its_venv(image):
    instr = instructions(image)
    (entry,) = [json.loads(v) for w, v in instr if w == "ENTRYPOINT"]
    assert entry == ["avtok"]
    assert pyproject()["project"]["scripts"]["avtok"] == "avtok.cli.main:cli"
    with open(DOCKER / f"Dockerfile.{image}", "rb") as f:
        envs = DockerfileParser(fileobj=f).envs
    venv = envs["VIRTUAL_ENV"]
    assert envs["PATH"].split(":")[0] == f"{venv}/bin", "pip and avtok must resolve to the venv's"
    assert ["python3", "-m", "venv", venv] in run_commands(image)
    # the build fails early when the console script is broken
    assert ["avtok", "--help"] in run_commands(image)
    (cmd,) = [json.loads(v) for w, v in instr if w == "CMD"]
    command, args = avtok_command(cmd)
    assert set(args) <= {o for p in command.params for o in p.opts} | {"--help"}


def test_both_images_share_one_python_minor_version():
    gpu_base = next(v for w, v in instructions("gpu") if w == "FROM")
    cpu_base = next(v for w, v in instructions("cpu") if w == "FROM")
    m = re.fullmatch(r"python:(\d+)\.(\d+)-slim-\w+", cpu_base)
    assert m, cpu_base
    assert BASE_PYTHON[gpu_base.rsplit("-", 1)[1]] == f"{m.group(1)}.{m.group(2)}"
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
    assert (int(m.group(1)), int(m.group(2))) >= (int(minimum.group(1)), int(minimum.group(2)))


# --- the guides' command lines ---------------------------------------------------------------------


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_avtok_command_in_the_guides_names_real_options(guide):
    lines = [argv[argv.index("avtok") + 1:] for argv in guide_commands(guide) if "avtok" in argv]
    assert lines, f"{guide}: no avtok command found in its bash blocks"
    for argv in lines:
        command, args = avtok_command(argv)
        known = {o for p in command.params for o in [*p.opts, *p.secondary_opts]} | {"--help", "-h"}
        for a in args:
            if a.startswith("-") and not re.fullmatch(r"-\d.*", a):
                assert a.split("=", 1)[0] in known, f"{guide.name}: `avtok {' '.join(argv)}`: unknown option {a}"


# --- the compose cluster ---------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_head_and_workers_form_one_ray_cluster():
    services = compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    for svc in (head, worker):
        context = (DOCKER / svc["build"]["context"]).resolve()
        assert context == ROOT and (context / svc["build"]["dockerfile"]).is_file()
    assert head["image"] == worker["image"] and head["build"] == worker["build"]
    h, w = ray_cli(head["entrypoint"]), ray_cli(worker["entrypoint"])
    assert head["entrypoint"][1] == worker["entrypoint"][1] == "start"
    assert h.params["head"] and h.params["block"] and w.params["block"] and not w.params["head"]
    address = f"{head['hostname']}:{h.params['port']}"
    assert w.params["address"] == address
    kind, *check = head["healthcheck"]["test"]
    assert kind == "CMD" and ray_cli(check).params["address"] == address
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    # the avtok commands the guides run against this cluster use its address
    for guide in GUIDES:
        for argv in guide_commands(guide):
            if "compose" in argv and "exec" in argv and "avtok" in argv:
                assert option(argv, "--address") == address, f"{guide.name}: {' '.join(argv)}"


def test_compose_nodes_have_shm_for_the_object_store_and_the_shared_volume():
    spec = compose()
    for name, svc in spec["services"].items():
        store = ray_cli(svc["entrypoint"]).params["object_store_memory"]
        assert size_bytes(svc["shm_size"]) > store, f"{name}: /dev/shm smaller than Ray's object store"
        mounts = dict(v.split(":", 1) for v in svc["volumes"])
        assert {k for k, v in mounts.items() if v == "/data"} <= set(spec["volumes"]), name
        assert "/data" in mounts.values()
        assert svc["environment"]["RAY_AUTH_MODE"] == "token"


def test_guides_export_every_variable_compose_requires():
    required = set(re.findall(r"\$\{(\w+):\?", (DOCKER / "compose.yaml").read_text()))
    assert "RAY_AUTH_TOKEN" in required
    for guide in GUIDES:
        text = "\n".join(bash_blocks(guide))
        if "docker/compose.yaml up" not in text:
            continue
        exported = set(re.findall(r"^\s*export\s+(\w+)=", text, flags=re.M))
        assert required <= exported, f"{guide.name} starts the compose cluster without {required - exported}"


# --- KubeRay ---------------------------------------------------------------------------------------


def test_kuberay_cluster_parses_as_ray_start_and_shares_data_and_shm():
    docs = list(yaml.safe_load_all((DOCKER / "kuberay.yaml").read_text()))
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    head_spec = cluster["spec"]["headGroupSpec"]
    groups = [("head", head_spec)] + [(g["groupName"], g) for g in cluster["spec"]["workerGroupSpecs"]]
    (head_container,) = head_spec["template"]["spec"]["containers"]
    gcs_port = next(p["containerPort"] for p in head_container["ports"] if p["name"] == "gcs")
    built = {option(argv, "-t"): DOCKER.parent / option(argv, "-f")
             for argv in guide_commands(DOCKER / "README.md") if argv[:2] == ["docker", "build"]}
    for name, group in groups:
        params = group["rayStartParams"]
        args = ["ray", "start", *(f"--{k}={v}" for k, v in params.items())] + (["--head"] if name == "head" else [])
        store = ray_cli(args).params["object_store_memory"]
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory" and size_bytes(shm["sizeLimit"]) > store
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        host = "127.0.0.1" if name == "head" else f"{cluster['metadata']['name']}-head-svc"
        for probe in ("readinessProbe", "livenessProbe"):
            assert ray_cli(container[probe]["exec"]["command"]).params["address"] == f"{host}:{gcs_port}"
        repo, _, tag = container["image"].partition(":")
        assert tag in ("", "latest") and built.get(repo, Path("/nonexistent")).is_file(), (
            f"{name}: image {container['image']} is not built by docker/README.md")
        if name == "gpu":
            assert built[repo].name == "Dockerfile.gpu"
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
