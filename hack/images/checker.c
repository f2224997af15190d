/* The corpus checker: runs as a container's process and prints a manifest of its rootfs, so two
 * runtimes' views of one image can be diffed (hack/image-corpus.sh). Built static by
 * hack/images/corpus.py and put in every corpus image's base layer as /checker.
 *
 * Output, one line each, sorted by path (scandir + alphasort, so the same tree prints the same):
 *   proc uid=U gid=G groups=... cwd=DIR      the process as the runtime set it up
 *   argv[i]=...  env=...                     argv and the environment (sorted)
 *   PATH TYPE MODE UID:GID [size=N hash=H | -> TARGET | dev=MAJ:MIN] [link=FIRST] [mtime=S]
 *        [xattr NAME=HEX]...
 * The walk stays on the root's file system (mounts the runtime adds -- /proc, /dev, /sys, the
 * pod's /etc/hosts... -- are not the image's), except below the paths given as arguments
 * (image volumes, which both runtimes bind from elsewhere). Hard links are shown as
 * link=<first path of that inode>. Directory mtimes are not printed: creating a mount point in
 * a directory (each runtime its own) changes it. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

struct seen { dev_t dev; ino_t ino; char *path; };
static struct seen *seen;
static size_t nseen, capseen;
static dev_t rootdev;

static const char *first_link(const struct stat *st, const char *path) {
    for (size_t i = 0; i < nseen; i++)
        if (seen[i].dev == st->st_dev && seen[i].ino == st->st_ino) return seen[i].path;
    if (nseen == capseen) {
        capseen = capseen ? capseen * 2 : 256;
        seen = realloc(seen, capseen * sizeof *seen);
        if (!seen) { perror("realloc"); exit(2); }
    }
    seen[nseen].dev = st->st_dev;
    seen[nseen].ino = st->st_ino;
    seen[nseen].path = strdup(path);
    nseen++;
    return NULL;
}

static uint64_t hash_file(const char *path, int *err) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a 64 */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) { *err = errno; return 0; }
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) { h ^= buf[i]; h *= 1099511628211ULL; }
    if (n < 0) *err = errno;
    close(fd);
    return h;
}

static void print_xattrs(const char *path) {
    char names[8192];
    ssize_t n = llistxattr(path, names, sizeof names);
    if (n <= 0) return;
    /* names come in the file system's order: print them sorted */
    const char *list[128];
    int cnt = 0;
    for (char *p = names; p < names + n && cnt < 128; p += strlen(p) + 1) list[cnt++] = p;
    for (int i = 1; i < cnt; i++)
        for (int j = i; j > 0 && strcmp(list[j - 1], list[j]) > 0; j--) {
            const char *t = list[j]; list[j] = list[j - 1]; list[j - 1] = t;
        }
    for (int i = 0; i < cnt; i++) {
        unsigned char val[4096];
        ssize_t v = lgetxattr(path, list[i], val, sizeof val);
        printf(" xattr %s=", list[i]);
        if (v < 0) { printf("(error %d)", errno); continue; }
        for (ssize_t k = 0; k < v; k++) printf("%02x", val[k]);
    }
}

static void walk(const char *path, int any_dev);

static void entry(const char *path, int any_dev) {
    struct stat st;
    if (lstat(path, &st) != 0) { printf("%s (lstat error %d)\n", path, errno); return; }
    if (!any_dev && st.st_dev != rootdev) return; /* a runtime's mount: not the image's */
    const char *type = "?";
    switch (st.st_mode & S_IFMT) {
    case S_IFREG: type = "file"; break;
    case S_IFDIR: type = "dir"; break;
    case S_IFLNK: type = "symlink"; break;
    case S_IFCHR: type = "char"; break;
    case S_IFBLK: type = "block"; break;
    case S_IFIFO: type = "fifo"; break;
    case S_IFSOCK: type = "socket"; break;
    }
    printf("%s %s %04o %u:%u", path, type, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
           (unsigned)st.st_gid);
    if (S_ISREG(st.st_mode)) {
        int err = 0;
        uint64_t h = hash_file(path, &err);
        if (err) printf(" size=%lld hash=(error %d)", (long long)st.st_size, err);
        else printf(" size=%lld hash=%016llx", (long long)st.st_size, (unsigned long long)h);
        if (st.st_nlink > 1) {
            const char *f = first_link(&st, path);
            if (f) printf(" link=%s", f);
        }
    } else if (S_ISLNK(st.st_mode)) {
        char target[8192];
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n >= 0) { target[n] = 0; printf(" -> %s", target); }
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        printf(" dev=%u:%u", major(st.st_rdev), minor(st.st_rdev));
    }
    if (!S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) printf(" mtime=%lld.%09ld",
        (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    print_xattrs(path);
    printf("\n");
    if (S_ISDIR(st.st_mode)) walk(path, any_dev);
}

static void walk(const char *path, int any_dev) {
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) { printf("%s (scandir error %d)\n", path, errno); return; }
    for (int i = 0; i < n; i++) {
        const char *d = names[i]->d_name;
        if (strcmp(d, ".") && strcmp(d, "..")) {
            char child[8192];
            snprintf(child, sizeof child, "%s/%s", strcmp(path, "/") ? path : "", d);
            entry(child, any_dev);
        }
        free(names[i]);
    }
    free(names);
}

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

extern char **environ;

int main(int argc, char **argv) {
    gid_t groups[64];
    int ng = getgroups(64, groups);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "(error)");
    printf("proc uid=%u gid=%u groups=", (unsigned)getuid(), (unsigned)getgid());
    for (int i = 0; i < ng; i++) printf("%s%u", i ? "," : "", (unsigned)groups[i]);
    printf(" cwd=%s\n", cwd);
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    size_t ne = 0;
    while (environ[ne]) ne++;
    qsort(environ, ne, sizeof *environ, cmp);
    for (size_t i = 0; i < ne; i++) {
        /* HOSTNAME is the pod's, different by design */
        if (strncmp(environ[i], "HOSTNAME=", 9)) printf("env=%s\n", environ[i]);
    }
    struct stat st;
    if (stat("/", &st) != 0) { perror("stat /"); return 2; }
    rootdev = st.st_dev;
    printf("/ dir %04o %u:%u\n", (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
           (unsigned)st.st_gid);
    walk("/", 0);
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '/') continue;
        printf("## volume %s\n", argv[i]);
        entry(argv[i], 1);
    }
    printf("## end\n");
    return 0;
}
