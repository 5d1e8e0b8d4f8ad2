/*
 * log: one line per event, text or JSON, to stderr.
 * Every line says what it is about: callers pass the object (file, entry,
 * child pid, generation) in the message or as a key=value field.
 */
#ifndef FPS_LOG_H
#define FPS_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };
enum log_format { LOG_FMT_TEXT, LOG_FMT_JSON };

void log_init(const char *program, enum log_format fmt, enum log_level level);
int log_level_parse(const char *s, enum log_level *out);   /* 0 ok, -1 unknown */
int log_format_parse(const char *s, enum log_format *out); /* 0 ok, -1 unknown */

/* The *_errno variants append ": strerror(errno)" (relayd's log_warn vs log_warnx). */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
