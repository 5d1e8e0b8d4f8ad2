/*
 * log: formats one event per line on stderr, as text ("time level program: msg")
 * or as a JSON object, so that both a person and a log shipper can read it.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *log_program = "fps";
static enum log_format log_fmt = LOG_FMT_TEXT;
static enum log_level log_min = LOG_LVL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *program, enum log_format fmt, enum log_level level)
{
	log_program = program;
	log_fmt = fmt;
	log_min = level;
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LOG_LVL_WARN;
		return 0;
	}
	return -1;
}

int log_format_parse(const char *s, enum log_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = LOG_FMT_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = LOG_FMT_JSON;
	else
		return -1;
	return 0;
}

/* JSON string escaping for the message; control bytes become \u00XX. */
static void json_put_escaped(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
}

static void log_emit(enum log_level lvl, int errnum, const char *fmt, va_list ap)
{
	if (lvl < log_min)
		return;
	char msg[4096];
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if (errnum != 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(errnum));

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[32];
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

	flockfile(stderr);
	if (log_fmt == LOG_FMT_JSON) {
		fprintf(stderr, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"program\":\"%s\",\"msg\":\"", when,
		        ts.tv_nsec / 1000000, level_names[lvl], log_program);
		json_put_escaped(stderr, msg);
		fputs("\"}\n", stderr);
	} else {
		/* Text lines stay one line each and carry no terminal controls: every control byte
		 * (CR, ESC, DEL, ...) and every byte outside ASCII is written as an escape, because
		 * messages quote configuration and peers, which an attacker may write. */
		fprintf(stderr, "%s.%03ldZ %-5s %s: ", when, ts.tv_nsec / 1000000, level_names[lvl], log_program);
		for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
			if (*p == '\n')
				fputs("\\n", stderr);
			else if (*p == '\r')
				fputs("\\r", stderr);
			else if (*p == '\t')
				fputs("\\t", stderr);
			else if (*p < 0x20 || *p >= 0x7f)
				fprintf(stderr, "\\x%02x", *p);
			else
				fputc(*p, stderr);
		}
		fputc('\n', stderr);
	}
	fflush(stderr);
	funlockfile(stderr);
}

#define LOG_FN(name, lvl, use_errno)                             \
	void name(const char *fmt, ...)                          \
	{                                                        \
		int saved = errno;                               \
		va_list ap;                                      \
		va_start(ap, fmt);                               \
		log_emit(lvl, (use_errno) ? saved : 0, fmt, ap); \
		va_end(ap);                                      \
		errno = saved;                                   \
	}

LOG_FN(log_debug, LOG_LVL_DEBUG, 0)
LOG_FN(log_info, LOG_LVL_INFO, 0)
LOG_FN(log_warn, LOG_LVL_WARN, 0)
LOG_FN(log_warn_errno, LOG_LVL_WARN, 1)
LOG_FN(log_error, LOG_LVL_ERROR, 0)
LOG_FN(log_error_errno, LOG_LVL_ERROR, 1)
