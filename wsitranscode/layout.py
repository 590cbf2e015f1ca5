"""The names recode gives its own files in an output folder.

Kept apart so that the scanner, which must stay light, can recognise them: a recode output
read as an input (validate, export, ls) holds these beside the series.
"""

RUN_RECORD_NAME = "wsitranscode-run.json"
STAGING_PREFIX = ".partial-"  # a series being written; renamed into place when complete
LOCK_NAME = ".wsitranscode.lock"  # held by the one run writing into the folder
OWN_FILES = frozenset({RUN_RECORD_NAME, LOCK_NAME})
