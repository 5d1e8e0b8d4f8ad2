/*
 * err: the one error type every stage fills in. It carries where the fault is
 * (file:line:col, any part optional) and a message; main() maps it to an exit code.
 */
#ifndef FPS_ERR_H
#define FPS_ERR_H

#include <stddef.h>

struct fps_err {
	char file[512]; /* "" when no file is at fault */
	int line;       /* 1-based; 0 = unknown */
	int col;        /* 1-based; 0 = unknown */
	char msg[1024];
	int sys; /* the errno behind the failure (err_sys), 0 when none: lets a caller tell a full disk
	          * from bad input without reading the message */
};

void err_clear(struct fps_err *e);
/* Sets *e and returns -1, so a stage can `return err_set(...)`. Control bytes and bytes outside
 * ASCII in the message and file name are stored as \xNN: an error is shown in logs, /status and
 * terminals, and must not carry a CR or an escape sequence from the input. */
int err_set(struct fps_err *e, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* err_set for a failed system call: also keeps errnum in e->sys (the message says it in words). */
int err_sys(struct fps_err *e, int errnum, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A bounded excerpt of input text for a message: at most ERR_QUOTE_MAX bytes of s, with control
 * and non-ASCII bytes as \xNN and "..." when cut. Quote input only through this: an error
 * names the position; the excerpt only helps to spot it. Returns buf. */
#define ERR_QUOTE_MAX 40
#define ERR_QUOTE_BUF (ERR_QUOTE_MAX * 4 + 4)
const char *err_quote(const char *s, char buf[ERR_QUOTE_BUF]);
/* 1-based line and column of the byte at off in text (for parsers that report offsets). */
void err_text_pos(const char *text, size_t off, int *line, int *col);
/* "file:line:col: msg", "file: msg" or "msg", whichever parts are known. */
const char *err_str(const struct fps_err *e, char *buf, size_t len);

#endif
