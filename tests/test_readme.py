"""README as a user reads it: the commands it gives are the ones CI and the scripts run, its configs table names every
file in configs/ as that file's own header does, and every link between README and docs/ lands on a file and heading.

Figures in README and docs/ are checked against their raw files in test_figures.py."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]


def section(text: str, heading: str) -> str:
    """The text under a level-2 heading, to the next level-2 heading."""
    after = text[text.index(heading + "\n") + len(heading) :]
    end = re.search(r"^## ", after, flags=re.MULTILINE)
    return after[: end.start()] if end else after


def test_the_two_commands_are_what_ci_and_the_scripts_run():
    text = README.read_text()
    assert "    bash scripts/demo.sh " in text and "    bash scripts/test.sh " in text
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()  # CI runs README's test command
    assert "looper pipeline configs/demo.yaml" in (REPO / "scripts" / "demo.sh").read_text()
    for script in ("demo.sh", "test.sh"):
        assert "bash scripts/setup.sh" in (REPO / "scripts" / script).read_text()


def test_the_configs_table_names_every_config_with_its_header_launch_command_and_model():
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section(README.read_text(), "## Configs").splitlines()
        if line.startswith("| `configs/")
    ]
    listed = {row[0].strip("`"): row for row in rows}
    assert sorted(listed) == sorted(f"configs/{p.name}" for p in (REPO / "configs").glob("*.yaml"))
    for name, (_, model, _, launch) in listed.items():
        text = (REPO / name).read_text()
        header_launch = re.search(r"^# Launch: (looper .*?)(?:\s{2,}|$)", text, flags=re.MULTILINE).group(1)
        assert launch == f"`{header_launch.strip()}`", name
        model_path = yaml.safe_load(text)["model"]["name_or_path"]
        # a row names its model, or says it is the row above's ("the same, ...")
        assert model == f"`{model_path}`" or model.startswith("the same"), name


def test_the_qwen_results_block_is_there_once_above_the_smollm2_results():
    text = README.read_text()
    marker = "<!-- qwen-results: filled from docs/bench/ after the GPU run -->"
    assert text.count(marker) == 1 and text.index(marker) < text.index("SmolLM2-135M-Instruct (`embedded:")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_readme_and_docs_land_on_a_file_and_heading():
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check offline
                continue
            path, _, anchor = target.partition("#")
            doc = (page.parent / path).resolve() if path else page
            assert doc.exists(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", doc.read_text(), flags=re.MULTILINE)
                assert anchor in {github_anchor(h) for h in headings}, f"{page.name}: {target}"
            checked += 1
    assert checked >= 10  # README's links to docs/ are found at all


def test_rendered_tables_are_what_their_commands_print_from_the_raw_files(tmp_path, capsys):
    """Tables between render markers (scripts/render_docs.py) are current; a figure edited by hand is caught."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_docs", REPO / "scripts" / "render_docs.py")
    render_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_docs)
    assert render_docs.main(["--check"]) == 0, capsys.readouterr().out
    text = (REPO / "docs" / "results.md").read_text()
    assert text.count("<!-- render: python bench/") >= 2
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("")
    edited = text.replace("| 69.70 [67.3, 72.0] |", "| 71.70 [67.3, 72.0] |", 1)
    assert edited != text
    (tmp_path / "docs" / "results.md").write_text(edited)
    assert render_docs.main(["--check"], root=tmp_path) == 1
    assert "docs/results.md:" in capsys.readouterr().out
    assert render_docs.main([], root=tmp_path) == 0 and (tmp_path / "docs" / "results.md").read_text() == text
