"""tools/dev/update_readme.py: the results block of the README, rewritten between its markers only."""
from conftest import load_tool


def test_update_readme_replaces_only_the_text_between_the_markers(tmp_path):
    update = load_tool("dev/update_readme")
    res = tmp_path / "results"
    res.mkdir()
    (res / "accuracy_if100_quick.md").write_text("### Accuracy A\n\nPer-class accuracy of every method: `x.png`.\n")
    (res / "accuracy_if100_quick.png").write_bytes(b"png")
    (res / "accuracy_if100_sweep_weight_decay.md").write_text("### Study S\n")
    (res / "accuracy_if10.md").write_text("### Accuracy B\n")
    (res / "throughput_cpu.md").write_text("### Throughput T\n")
    (res / "throughput_cpu_smoke.md").write_text("### SMOKE\n")
    readme = tmp_path / "README.md"
    readme.write_text("# X\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\ntail\n")
    assert update.main(["--readme", str(readme), "--results", str(res), "--check"]) == 1
    assert update.main(["--readme", str(readme), "--results", str(res)]) == 0
    text = readme.read_text()
    assert text.startswith("# X\n\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\n\ntail\n")
    assert "old" not in text and "SMOKE" not in text and "Per-class accuracy of every method" not in text
    # method tables (IF 100 first), then other IFs, then throughput, then side studies (linked, not inlined)
    assert text.index("Accuracy A") < text.index("Accuracy B") < text.index("Throughput T") < text.index("Study S")
    assert "- [Study S](results/accuracy_if100_sweep_weight_decay.md)" in text
    assert "](results/accuracy_if100_quick.png)" in text
    assert update.main(["--readme", str(readme), "--results", str(res), "--check"]) == 0
