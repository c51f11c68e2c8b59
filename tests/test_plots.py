"""The memory pictures of `analyze --plot`: per operator with persistent bytes and the budget against the
whole arena; a bundle per stage and tail over its arena map; readable proportions."""
import struct

from test_export_arduino import write_small_cnn_bundle


def _png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_model_plot_and_table(small_cnn_tflite, tmp_path):
    from tinyvision.analysis import memory_profile, plot_memory
    from tinyvision.analysis.report import analyze_tflite, format_table

    result, profile = analyze_tflite(small_cnn_tflite, "small.tflite", verify=False, search_min_arena=False)
    text = format_table(result)
    assert "largest live set" in text and "lower bound" not in text
    first = result["ops"][0]
    assert first["shape"] == [1, 12, 12, 8] and "1x12x12x8" in text and first["output"] in text
    width, height = _png_size(plot_memory(memory_profile(small_cnn_tflite), tmp_path / "m.png", budget_bytes=4096,
                                          title="small", persistent_bytes=result["tail_bytes"]))
    assert width / height <= 2.0 and height >= 400


def test_bundle_plot(small_cnn_tflite, tmp_path):
    from converters.patching import read_bundle
    from tinyvision.analysis.plot import plot_bundle_memory

    bundle = read_bundle(write_small_cnn_bundle(tmp_path / "b", small_cnn_tflite, "one_at_a_time"))
    width, height = _png_size(plot_bundle_memory(bundle, tmp_path / "b.png", budget_bytes=256 * 1024))
    assert width / height <= 2.0 and height >= 700
