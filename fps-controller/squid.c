/*
 * squid: candidate validation and the run command line. `squid -k parse` exits 0
 * although broken when an ACL file is missing or a helper binary is absent
 * (docs/squid-facts.md): so any FATAL/ERROR/unrecognized/"empty ACL" line fails the check.
 */
#include "squid.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "proc.h"

static const char *const fatal_markers[] = {"FATAL", "ERROR", "unrecognized", "empty ACL", "Bungled", "aborting"};

int squid_parse_check(const char *squid_bin, const char *conf, char *warnings, size_t wlen, struct fps_err *e)
{
	char *argv[] = {(char *)squid_bin, "-k", "parse", "-f", (char *)conf, NULL};
	char *out = NULL;
	int status = proc_run(argv, 120000, &out, 1u << 20);
	if (warnings && wlen)
		warnings[0] = '\0';
	if (status < 0 || out == NULL) {
		free(out);
		return err_set(e, conf, 0, 0, "cannot run %s -k parse", squid_bin);
	}
	int rc = 0;
	size_t wused = 0;
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		/* Squid echoes every directive it reads ("Processing: ..."); only its own
		 * verdict lines count. */
		if (strstr(line, "| Processing: "))
			continue;
		bool bad = false;
		for (size_t i = 0; i < sizeof(fatal_markers) / sizeof(fatal_markers[0]); i++)
			if (strstr(line, fatal_markers[i]))
				bad = true;
		if (bad && rc == 0)
			rc = err_set(e, conf, 0, 0, "squid -k parse: %s", line);
		if (!bad && strstr(line, "WARNING") && warnings && wused + strlen(line) + 2 < wlen)
			wused += (size_t)snprintf(warnings + wused, wlen - wused, "%s\n", line);
	}
	if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		rc = err_set(e, conf, 0, 0, "squid -k parse failed (status %d)", status);
	free(out);
	return rc;
}

void squid_argv(const char *squid_bin, const char *conf, int workers, const char *service_name, char *argv[])
{
	int i = 0;
	argv[i++] = (char *)squid_bin;
	/* -N runs one process and silently ignores "workers"; SMP needs --foreground
	 * and a service name of its own per instance (docs/squid-facts.md). */
	if (workers > 1) {
		argv[i++] = "--foreground";
		argv[i++] = "-n";
		argv[i++] = (char *)service_name;
	} else {
		argv[i++] = "-N";
	}
	argv[i++] = "-f";
	argv[i++] = (char *)conf;
	argv[i] = NULL;
}
