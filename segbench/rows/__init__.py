"""Result rows: the schema every runner fills, the environment stamped on each row, and the files.

This layer knows nothing of how rows are measured (runners, above) or shown (output, above).
"""
