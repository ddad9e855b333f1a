"""The SCP receipt-time histogram each SCP publishes for /metrics (no Redis needed here)."""

from __future__ import annotations


def test_receipt_histogram_buckets_are_cumulative_when_read() -> None:
    from archive.services.receipt_timing import BUCKETS, ReceiptHistogram

    histogram = ReceiptHistogram()
    for seconds in (0.001, 0.004, 0.02, 0.3):
        histogram.observe(seconds)
    histogram.observe(99.0, "invalid")
    fields = histogram.fields()
    assert fields["b0"] == "2" and fields[f"b{len(BUCKETS)}"] == "1"  # two under 5 ms, one above every bucket
    assert float(fields["sum"]) == 99.325
    assert fields["o:stored"] == "4" and fields["o:invalid"] == "1"
