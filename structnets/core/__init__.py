"""The core: cells (one step each), schedules (the order of steps), the one loop and the RNN on top.

Nothing here knows about a field; every model above is built from these parts.
"""
