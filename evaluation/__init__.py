"""Evidence that the conscience works: judge, repair and misalignment evaluations and reports."""
