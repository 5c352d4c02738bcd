/*
 * course_client: a client of the table service written as the course's C
 * clients are, knowing only what they know: it lists the children of
 * /chain in ZooKeeper, sorts them by comparing whole names (strcmp), takes
 * the first as the head and the last as the tail, reads each member's
 * data as a NUL-terminated "ip:port", and sends course messages (the
 * course's sdmessage.proto, beside this file) in u16-length frames
 * (0xFFFF and a u32 length for large ones). Any OP_ERROR answer to a get
 * is "not found"; to anything else it is a failure. A write is never sent
 * twice.
 *
 * Usage: course_client ZK [tail|any]
 *
 * ZK is ZooKeeper's host:port list; "any" sends each read to a member
 * chosen at random instead of the tail. Commands come on standard input,
 * one per line, and each gets one line of answer on standard output:
 *
 *   put KEY VALUE   ok | error refused | error io | error unsent
 *   get KEY         value VALUE | not found | error io | error unsent
 *   del KEY         ok | error refused | error io | error unsent
 *   size            size N | error refused | error io | error unsent
 *   members         members NAME=ADDR ... (head first)
 *
 * "error unsent" says that nothing of the request was sent (a write took
 * no effect); "error io" that the connection failed after it may have
 * been, so the outcome of a write is unknown. VALUE is the rest of the
 * line. Each request waits at most TIMEOUT_S seconds.
 */
#define _POSIX_C_SOURCE 200809L

#include <netdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "sdmessage.pb-c.h"

#define CHAIN "/chain"
#define TIMEOUT_S 10
#define SESSION_MS 10000
#define MAX_FRAME (64u << 20)

/* The results of exchange, besides 0. */
#define ERR_IO (-1)     /* failed after the request may have been sent */
#define ERR_UNSENT (-2) /* failed before anything was sent */

struct member {
	char *name;
	char addr[256];
	int fd; /* -1 while not connected */
};

static const char *zk_hosts;
static zhandle_t *zh;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int connected; /* guarded by mu */
static int changed = 1; /* /chain must be listed again; guarded by mu */
static struct member *members;
static int n_members;
static int read_any;

/* watcher runs on ZooKeeper's thread: it only takes note. */
static void watcher(zhandle_t *h, int type, int state, const char *path, void *ctx)
{
	(void)h, (void)path, (void)ctx;
	pthread_mutex_lock(&mu);
	if (type == ZOO_SESSION_EVENT) {
		connected = state == ZOO_CONNECTED_STATE;
		if (state == ZOO_EXPIRED_SESSION_STATE)
			changed = 1; /* the child watch went with the session */
		pthread_cond_broadcast(&cond);
	} else {
		changed = 1; /* the child watch on /chain fired */
	}
	pthread_mutex_unlock(&mu);
}

static void set_changed(void)
{
	pthread_mutex_lock(&mu);
	changed = 1;
	pthread_mutex_unlock(&mu);
}

/* zk_connect starts a session and waits for it, for SESSION_MS at most. */
static int zk_connect(void)
{
	struct timespec deadline;
	int ok;

	pthread_mutex_lock(&mu);
	connected = 0;
	pthread_mutex_unlock(&mu);
	zh = zookeeper_init(zk_hosts, watcher, SESSION_MS, NULL, NULL, 0);
	if (zh == NULL) {
		fprintf(stderr, "course_client: no ZooKeeper handle for %s\n", zk_hosts);
		exit(1);
	}
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += SESSION_MS / 1000;
	pthread_mutex_lock(&mu);
	while (!connected && pthread_cond_timedwait(&cond, &mu, &deadline) == 0)
		;
	ok = connected;
	pthread_mutex_unlock(&mu);
	return ok ? 0 : -1;
}

static void free_members(struct member *ms, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if (ms[i].fd >= 0)
			close(ms[i].fd);
		free(ms[i].name);
	}
	free(ms);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* resolve lists /chain again if it changed (or a request failed), sorted
 * by name, keeping the connections to members whose address stays. */
static int resolve(void)
{
	struct String_vector kids;
	struct member *ms;
	int i, j, n = 0, rc, need;

	pthread_mutex_lock(&mu);
	need = changed;
	changed = 0;
	pthread_mutex_unlock(&mu);
	if (!need)
		return 0;
	if (zoo_state(zh) == ZOO_EXPIRED_SESSION_STATE) {
		zookeeper_close(zh);
		if (zk_connect() != 0)
			goto fail;
	}
	rc = zoo_get_children(zh, CHAIN, 1, &kids);
	if (rc != ZOK)
		goto fail;
	qsort(kids.data, (size_t)kids.count, sizeof kids.data[0], cmp_names);
	ms = calloc((size_t)kids.count + 1, sizeof *ms);
	if (ms == NULL) {
		deallocate_String_vector(&kids);
		goto fail;
	}
	for (i = 0; i < kids.count; i++) {
		char path[512];
		int len = (int)sizeof ms[n].addr - 1;

		snprintf(path, sizeof path, "%s/%s", CHAIN, kids.data[i]);
		rc = zoo_get(zh, path, 0, ms[n].addr, &len, NULL);
		if (rc == ZNONODE)
			continue; /* gone since the listing; the watch fired */
		if (rc != ZOK) {
			free_members(ms, n);
			deallocate_String_vector(&kids);
			goto fail;
		}
		ms[n].addr[len < 0 ? 0 : len] = '\0'; /* the address ends at the first NUL */
		ms[n].name = strdup(kids.data[i]);
		ms[n].fd = -1;
		for (j = 0; j < n_members; j++) {
			if (members[j].fd >= 0 && strcmp(members[j].addr, ms[n].addr) == 0) {
				ms[n].fd = members[j].fd;
				members[j].fd = -1;
			}
		}
		n++;
	}
	deallocate_String_vector(&kids);
	free_members(members, n_members);
	members = ms;
	n_members = n;
	return 0;
fail:
	set_changed();
	return -1;
}

/* dial connects to "host:port", with TIMEOUT_S on every send and receive. */
static int dial(const char *addr)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints, *res, *ai;
	struct timeval tv;
	int fd = -1;

	if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		return -1;
	tv.tv_sec = TIMEOUT_S;
	tv.tv_usec = 0;
	for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = recv(fd, p, n, 0);
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* exchange sends req to m and reads the answer into *reply, which the
 * caller frees. A failure closes the connection and has /chain listed
 * again before the next request. */
static int exchange(struct member *m, const MessageT *req, MessageT **reply)
{
	size_t len = message_t__get_packed_size(req), hdr = len < 0xFFFF ? 2 : 6;
	uint8_t *buf, h[6];
	uint32_t size;

	if (m->fd < 0 && (m->fd = dial(m->addr)) < 0) {
		set_changed();
		return ERR_UNSENT;
	}
	buf = malloc(hdr + len);
	if (buf == NULL)
		return ERR_UNSENT;
	if (hdr == 2) {
		buf[0] = (uint8_t)(len >> 8);
		buf[1] = (uint8_t)len;
	} else {
		buf[0] = buf[1] = 0xFF;
		buf[2] = (uint8_t)(len >> 24);
		buf[3] = (uint8_t)(len >> 16);
		buf[4] = (uint8_t)(len >> 8);
		buf[5] = (uint8_t)len;
	}
	message_t__pack(req, buf + hdr);
	if (write_all(m->fd, buf, hdr + len) != 0 || read_all(m->fd, h, 2) != 0)
		goto fail;
	size = (uint32_t)h[0] << 8 | h[1];
	if (size == 0xFFFF) {
		if (read_all(m->fd, h + 2, 4) != 0)
			goto fail;
		size = (uint32_t)h[2] << 24 | (uint32_t)h[3] << 16 | (uint32_t)h[4] << 8 | h[5];
	}
	if (size > MAX_FRAME)
		goto fail;
	free(buf);
	buf = malloc(size + 1);
	if (buf == NULL || read_all(m->fd, buf, size) != 0)
		goto fail;
	*reply = message_t__unpack(NULL, size, buf);
	if (*reply == NULL)
		goto fail;
	free(buf);
	return 0;
fail:
	free(buf);
	close(m->fd);
	m->fd = -1;
	set_changed();
	return ERR_IO;
}

/* target returns the member a request goes to: the head for a write, the
 * tail (or any member) for a read; NULL if there is none. */
static struct member *target(int write)
{
	if (resolve() != 0 || n_members == 0)
		return NULL;
	if (write)
		return &members[0];
	if (read_any)
		return &members[rand() % n_members];
	return &members[n_members - 1];
}

/* run sends req, a write or a read, and prints the answer. */
static void run(MessageT *req, int write)
{
	struct member *m = target(write);
	MessageT *reply = NULL;
	int rc;

	if (m == NULL) {
		puts("error unsent");
		return;
	}
	rc = exchange(m, req, &reply);
	if (rc != 0) {
		puts(rc == ERR_UNSENT ? "error unsent" : "error io");
		return;
	}
	if (reply->opcode == MESSAGE_T__OPCODE__OP_ERROR && req->opcode == MESSAGE_T__OPCODE__OP_GET)
		puts("not found");
	else if (reply->opcode == MESSAGE_T__OPCODE__OP_ERROR)
		puts("error refused");
	else if ((int)reply->opcode != (int)req->opcode + 1)
		printf("error protocol: opcode %d\n", (int)reply->opcode);
	else if (req->opcode == MESSAGE_T__OPCODE__OP_GET)
		printf("value %.*s\n", (int)reply->value.len, (const char *)reply->value.data);
	else if (req->opcode == MESSAGE_T__OPCODE__OP_SIZE)
		printf("size %d\n", (int)reply->result);
	else
		puts("ok");
	message_t__free_unpacked(reply, NULL);
}

static void members_cmd(void)
{
	int i;

	if (resolve() != 0) {
		puts("error unsent");
		return;
	}
	fputs("members", stdout);
	for (i = 0; i < n_members; i++)
		printf(" %s=%s", members[i].name, members[i].addr);
	putchar('\n');
}

/* command executes one line of input. */
static void command(char *line)
{
	MessageT req = MESSAGE_T__INIT;
	EntryT entry = ENTRY_T__INIT;
	char *verb = line, *key = NULL, *value = NULL;

	if ((key = strchr(line, ' ')) != NULL) {
		*key++ = '\0';
		if ((value = strchr(key, ' ')) != NULL)
			*value++ = '\0';
	}
	if (strcmp(verb, "put") == 0 && key != NULL && value != NULL) {
		req.opcode = MESSAGE_T__OPCODE__OP_PUT;
		req.c_type = MESSAGE_T__C_TYPE__CT_ENTRY;
		entry.key = key;
		entry.value.data = (uint8_t *)value;
		entry.value.len = strlen(value);
		req.entry = &entry;
		run(&req, 1);
	} else if ((strcmp(verb, "get") == 0 || strcmp(verb, "del") == 0) && key != NULL && value == NULL) {
		req.opcode = verb[0] == 'g' ? MESSAGE_T__OPCODE__OP_GET : MESSAGE_T__OPCODE__OP_DEL;
		req.c_type = MESSAGE_T__C_TYPE__CT_KEY;
		req.key = key;
		run(&req, verb[0] == 'd');
	} else if (strcmp(verb, "size") == 0 && key == NULL) {
		req.opcode = MESSAGE_T__OPCODE__OP_SIZE;
		req.c_type = MESSAGE_T__C_TYPE__CT_NONE;
		run(&req, 0);
	} else if (strcmp(verb, "members") == 0 && key == NULL) {
		members_cmd();
	} else {
		puts("error usage: put KEY VALUE | get KEY | del KEY | size | members");
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "tail") != 0 && strcmp(argv[2], "any") != 0)) {
		fprintf(stderr, "usage: %s ZK [tail|any]\n", argv[0]);
		return 2;
	}
	zk_hosts = argv[1];
	read_any = argc == 3 && strcmp(argv[2], "any") == 0;
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
	if (zk_connect() != 0) {
		fprintf(stderr, "%s: no ZooKeeper session at %s\n", argv[0], zk_hosts);
		return 1;
	}
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		command(line);
	}
	free(line);
	free_members(members, n_members);
	zookeeper_close(zh);
	return 0;
}
