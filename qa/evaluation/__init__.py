"""Evaluation stages behind `qa eval`: data (question sets in), metrics (outcomes -> figures),
report (figures -> tables, files and plots). The runner and the command are qa.evaluate."""
