/* status_file: see status_file.h. */
#include "status_file.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

void status_file_append(const char *path, const char *what, const char *value) {
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) {
        LOG(LOG_WARN, "cannot append to the status file %s", path);
        return;
    }
    fprintf(f, "%s%s%s\n", what, value[0] ? " " : "", value);
    fclose(f);
}

bool status_file_has(const char *path, const char *what, char *value, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char line[600];
    bool found = false;
    size_t wl = strlen(what);
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, what, wl) != 0 || (line[wl] != ' ' && line[wl] != '\n')) continue;
        found = true;
        if (value) {
            const char *v = line[wl] == ' ' ? line + wl + 1 : "";
            snprintf(value, cap, "%s", v);
            value[strcspn(value, "\n")] = '\0';
        }
    }
    fclose(f);
    return found;
}
