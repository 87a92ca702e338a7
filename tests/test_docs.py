"""The documentation: every relative link in README.md and docs/ resolves, and every example marked runnable (an
HTML comment `<!-- runnable -->` on the line before its fence) runs as written.

The examples run in a prepared folder: the files they name (`latent.pt`, `latent.safetensors`: a tiny latent;
`empty.safetensors`: caption embeddings), the caption cache holding the captions they encode (so no Gemma is needed:
pid's own cache path), and `pid.load` loading the tiny test network (`pid.archs.TINY`, on the CPU) whatever checkpoint
or device the example names — the one substitution, since no released checkpoint or GPU is at hand. Python blocks
run with `exec`; in bash blocks each `pid ...` command runs through `pid.cli.main` (in this process, so with the same
substitution) and must exit 0."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w+)\s*$")


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # links inside code blocks are not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def runnable_blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line, language, code) of every block whose fence follows a `<!-- runnable -->` line."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines[:-1]):
        fence = FENCE.match(lines[i + 1])
        if line.strip() == "<!-- runnable -->":
            assert fence, f"{path.name}:{i + 1}: <!-- runnable --> must be followed by a ```python or ```bash fence"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            out.append((i + 2, fence.group(1), "\n".join(lines[i + 2:end])))
    return out


def test_docs_exist_and_are_linked_from_the_readme():
    readme_links = {Path(t.split("#")[0]).name for t in relative_links(REPO / "README.md")}
    pages = {p.name for p in DOCS[1:]}
    assert pages <= readme_links, f"docs pages the README does not link: {sorted(pages - readme_links)}"
    assert len((REPO / "README.md").read_text().splitlines()) <= 100


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    missing = []
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            missing.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            missing.append(target)
    assert not missing, f"{path.name}: links that resolve to nothing: {missing}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+\s+(.*)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in heads}


EXAMPLES = [(p, line, lang, code) for p in DOCS for line, lang, code in runnable_blocks(p)]


def test_there_are_runnable_examples():
    langs = {lang for _, _, lang, _ in EXAMPLES}
    assert {"python", "bash"} <= langs and len(EXAMPLES) >= 5, EXAMPLES


@pytest.fixture
def doc_folder(tmp_path, monkeypatch, tiny_checkpoint):
    """The prepared folder (see the module docstring) as the working directory."""
    import pid
    from pid.archs import TINY
    from pid.captions import CaptionCache, default_cache_dir, encoder_cache_key, save_caption_embeds

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PID_CACHE_DIR", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, TINY.lq_latent_channels, 2, 3, generator=g)
    torch.save(latent, "latent.pt")
    from safetensors.torch import save_file

    save_file({"latent": latent}, "latent.safetensors")
    save_caption_embeds("empty.safetensors", torch.randn(300, TINY.txt_embed_dim, generator=g), [""])
    cache = CaptionCache(default_cache_dir())
    for caption in ("", "a red fox in the snow"):
        cache.put(encoder_cache_key(), caption, torch.randn(300, TINY.txt_embed_dim, generator=g))

    real_load = pid.load

    def load_tiny(source=None, *args, device="cpu", precision=None, **kwargs):
        return real_load(str(tiny_checkpoint.safetensors), config=tiny_checkpoint.kwargs, precision=precision)
    monkeypatch.setattr(pid, "load", load_tiny)
    return tmp_path


@pytest.mark.parametrize("path,line,lang,code", EXAMPLES,
                         ids=[f"{p.relative_to(REPO)}:{line}" for p, line, _, _ in EXAMPLES])
def test_runnable_example(path, line, lang, code, doc_folder):
    if lang == "python":
        exec(compile(code, f"{path.name}:{line}", "exec"), {"__name__": "__doc_example__"})
        written = re.findall(r'\.save\("([^"]+)"\)', code)
    else:
        assert lang == "bash", f"{path.name}:{line}: runnable blocks are python or bash"
        from pid.cli import main

        written = []
        for text in code.replace("\\\n", " ").splitlines():
            words = shlex.split(text, comments=True)
            if not words:
                continue
            assert words[0] == "pid", f"{path.name}:{line}: runnable bash blocks hold pid commands only: {text}"
            assert main(words[1:]) == 0, f"{path.name}:{line}: {text}"
            written += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out"]
    for name in written:  # what an example says it writes is there
        assert (doc_folder / name).is_file(), f"{path.name}:{line}: {name} was not written"
