"""Sequence tasks: palindromes, and the copy and associative-recall tasks for memory networks."""
