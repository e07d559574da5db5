"""Benchmark tasks built on :class:`structnets.RNN`."""
