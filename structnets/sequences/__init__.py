"""Sequence tasks: palindromes, and the copy and associative-recall tasks for memory networks."""

from .programs import Curriculum, CurriculumSchedule, Level, Program, generate_program, run_program, sample_program

__all__ = ["Curriculum", "CurriculumSchedule", "Level", "Program", "generate_program", "run_program", "sample_program"]
