/*
 * genword: the published generation word shared by the controller and every fps-acl
 * (genword.h). One page, the word at offset 0: an aligned 64-bit load or store is atomic.
 */
#include "genword.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GENWORD_SIZE 4096

int genword_create(struct genword *g, const char *path, uint64_t initial, gid_t gid, struct fps_err *e)
{
	g->word = NULL;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return err_set(e, path, 0, 0, "cannot open: %s", strerror(errno));
	struct stat sb;
	bool fresh = fstat(fd, &sb) == 0 && sb.st_size < GENWORD_SIZE;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || (fresh && ftruncate(fd, GENWORD_SIZE) < 0) ||
	    (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0 && errno != EPERM) || fchmod(fd, 0644) < 0) {
		int err = errno;
		close(fd);
		return err_set(e, path, 0, 0, "cannot prepare: %s", strerror(err));
	}
	void *p = mmap(NULL, GENWORD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int err = errno;
	close(fd);
	if (p == MAP_FAILED)
		return err_set(e, path, 0, 0, "cannot map: %s", strerror(err));
	g->word = p;
	if (fresh)
		genword_publish(g, initial);
	return 0;
}

void genword_publish(struct genword *g, uint64_t gen)
{
	if (g->word)
		__atomic_store_n(g->word, gen, __ATOMIC_SEQ_CST);
}

int genword_map(struct genword *g, const char *path, struct fps_err *e)
{
	g->word = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, path, 0, 0, "cannot open: %s", strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size < (off_t)sizeof(uint64_t)) {
		close(fd);
		return err_set(e, path, 0, 0, "not a generation file");
	}
	void *p = mmap(NULL, sizeof(uint64_t), PROT_READ, MAP_SHARED, fd, 0);
	int err = errno;
	close(fd);
	if (p == MAP_FAILED)
		return err_set(e, path, 0, 0, "cannot map: %s", strerror(err));
	g->word = p;
	return 0;
}

uint64_t genword_load(const struct genword *g)
{
	return g->word ? __atomic_load_n(g->word, __ATOMIC_SEQ_CST) : 0;
}

void genword_close(struct genword *g)
{
	/* The controller maps a page; fps-acl the word: unmapping a page covers both. */
	if (g->word)
		munmap(g->word, sizeof(uint64_t));
	g->word = NULL;
}
