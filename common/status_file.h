/* status_file: "WHAT VALUE" lines a daemon appends to a file a launcher watches (caravan
 * cluster waits on them: the coordinator's "control ENDPOINT" and "serving", a worker's
 * "joined NODE"). Plain text, one fact a line, appended as it happens. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

/* Appends "WHAT VALUE\n" (or "WHAT\n" for an empty value) to path; nothing when path is NULL.
 * A file that cannot be opened is logged and otherwise ignored. */
void status_file_append(const char *path, const char *what, const char *value);

/* true when path has a line for `what`; its value (the rest of the line) goes to value
 * (cap bytes, may be NULL). */
bool status_file_has(const char *path, const char *what, char *value, size_t cap);
