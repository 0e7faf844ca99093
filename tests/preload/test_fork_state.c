/* tests/preload/test_fork_state.c - after fork() the child can resolve
 * names, take locks and sleep (hard rule 6).
 *
 * The parent first uses all three from green threads - getaddrinfo, so
 * the resolver pool has started and its workers sit idle; sem_wait and
 * sem_post with contention, so green waiters were registered; sleeps -
 * and forks while green threads are parked on a lock and in a sleep. The
 * child then uses all three from the context that forked (libc's calls
 * there) and from green threads it spawns, which must cooperate as in
 * any process: lookups answered, no lost lock update, sleeps overlapped.
 * That holds whether the fork is made from the main context or from a
 * green thread (the child then goes on on that thread's stack, keeps its
 * identity, and exits 0 when its function returns), again in a
 * grandchild, and while another
 * OS thread keeps the resolver, the lock table and the identity registry
 * busy, so that a fork lands on resolver workers in the middle of glibc
 * lookups and on those locks held (without the fork handlers a child
 * there hangs within a few dozen forks).
 *
 * Every child runs under alarm(): a hang kills it with SIGALRM and fails
 * the test instead of stalling it.
 */
#include <netdb.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hub/green.h"
#include "tests/check.h"
#include "tests/preload/helpers.h"

#define CHILD_ALARM 20      /* seconds a child may take before it counts as hung */
#define CONTENDERS 6
#define ROUNDS 20
#define SLEEPERS 5
#define SLEEP_US 50000

/* ---- what every context does: resolve, lock, sleep -------------------- */

static int resolve_localhost(void)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int ok;

    if (getaddrinfo("localhost", "80", &hints, &res) != 0)
        return 0;
    ok = res && res->ai_family == AF_INET;
    freeaddrinfo(res);
    return ok;
}

static sem_t lock;
static int counter, lookups_ok;

/* Green thread: one lookup, then rounds increments of counter under the
 * lock, sleeping while it holds it, so the others park on the lock. A
 * read-sleep-write under a lock that let two in would lose an update. */
static void contender(void *arg)
{
    int rounds = (int)(intptr_t)arg;

    if (resolve_localhost())
        lookups_ok++;
    for (int i = 0; i < rounds; i++) {
        int c;
        CHECK_OR(sem_wait(&lock) == 0, );
        c = counter;
        usleep(200);
        counter = c + 1;
        CHECK_OR(sem_post(&lock) == 0, );
    }
}

/* From any context, green or not: lookups and contended locks in
 * CONTENDERS green threads. */
static int green_lookups_and_locks(int rounds)
{
    struct green *g[CONTENDERS];

    counter = lookups_ok = 0;
    CHECK_OR(sem_init(&lock, 0, 1) == 0, -1);
    for (int i = 0; i < CONTENDERS; i++) {
        g[i] = green_spawn(contender, (void *)(intptr_t)rounds, NULL);
        CHECK_OR(g[i] != NULL, -1);
    }
    for (int i = 0; i < CONTENDERS; i++)
        CHECK_OR(green_join(g[i], 10.0) == 0, -1);
    CHECK_OR(lookups_ok == CONTENDERS, -1);
    CHECK_OR(counter == CONTENDERS * rounds, -1);
    sem_destroy(&lock);
    return 0;
}

static void sleeper(void *arg)
{
    (void)arg;
    usleep(SLEEP_US);
}

/* From any context: SLEEPERS green sleeps overlap (each parks). */
static int green_sleeps(void)
{
    struct green *g[SLEEPERS];
    double t0 = check_now();

    for (int i = 0; i < SLEEPERS; i++)
        CHECK_OR((g[i] = green_spawn(sleeper, NULL, NULL)) != NULL, -1);
    for (int i = 0; i < SLEEPERS; i++)
        CHECK_OR(green_join(g[i], 10.0) == 0, -1);
    CHECK_OR(check_now() - t0 < SLEEPERS * SLEEP_US * 1e-6 * 0.8, -1);
    return 0;
}

static int green_workout(void)
{
    return green_lookups_and_locks(ROUNDS) < 0 || green_sleeps() < 0 ? -1 : 0;
}

/* Outside green threads: libc's own calls, which block this OS thread. */
static int plain_workout(void)
{
    sem_t s;
    struct timespec past = {0, 0};
    double t0;

    CHECK_OR(green_current() == NULL, -1);
    CHECK_OR(resolve_localhost(), -1);
    CHECK_OR(sem_init(&s, 0, 0) == 0, -1);
    CHECK_OR(sem_post(&s) == 0, -1);
    CHECK_OR(sem_wait(&s) == 0, -1);
    CHECK_OR(sem_timedwait(&s, &past) == -1 && errno == ETIMEDOUT, -1);
    sem_destroy(&s);
    t0 = check_now();
    CHECK_OR(usleep(2000) == 0, -1);
    CHECK_OR(check_now() - t0 >= 0.0019, -1);
    return 0;
}

/* ---- state left mid-use at the moment of the fork -------------------- */

static sem_t held;

/* Takes held and keeps it through a sleep: parked in the hub's timers. */
static void holder(void *arg)
{
    (void)arg;
    CHECK_OR(sem_wait(&held) == 0, );
    usleep(100000);
    CHECK_OR(sem_post(&held) == 0, );
}

/* Waits for held: parked, and registered in the lock table. */
static void waiter(void *arg)
{
    (void)arg;
    CHECK_OR(sem_wait(&held) == 0, );
    CHECK_OR(sem_post(&held) == 0, );
}

struct mess {
    struct green *holder, *waiter;
};

/* From the main context: leaves a holder and a waiter parked on held. */
static int mess_make(struct mess *m)
{
    CHECK_OR(sem_init(&held, 0, 1) == 0, -1);
    m->holder = green_spawn(holder, NULL, NULL);
    m->waiter = green_spawn(waiter, NULL, NULL);
    CHECK_OR(m->holder && m->waiter, -1);
    CHECK_OR(green_sleep(0.01) == 0, -1); /* runs them to their parks */
    return 0;
}

/* In the parent: the parked threads finish as if nothing happened. */
static int mess_clean(struct mess *m)
{
    CHECK_OR(green_join(m->holder, 10.0) == 0, -1);
    CHECK_OR(green_join(m->waiter, 10.0) == 0, -1);
    sem_destroy(&held);
    return 0;
}

/* ---- children --------------------------------------------------------- */

/* What every child does, from the context that forked. */
static void child_body(void)
{
    alarm(CHILD_ALARM);
    if (plain_workout() < 0 || green_workout() < 0 || plain_workout() < 0)
        check_failed_ = 1;
}

/* Waits for pid (parks if called in a green thread) and checks it exited
 * 0; says so if the alarm killed it. */
static int child_ok(pid_t pid)
{
    int status;

    CHECK_OR(pid > 0, -1);
    CHECK_OR(waitpid(pid, &status, 0) == pid, -1);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        fprintf(stderr, "child %d hung (killed by its alarm)\n", (int)pid);
    CHECK_OR(WIFEXITED(status), -1);
    CHECK_OR(WEXITSTATUS(status) == 0, -1);
    return 0;
}

/* Forks; the child runs child_body and ends with its verdict. */
static pid_t fork_worker(void)
{
    pid_t pid;

    fflush(NULL); /* nothing buffered twice */
    pid = fork();
    if (pid == 0) {
        child_body();
        _exit(check_failed_ ? 1 : 0);
    }
    return pid;
}

TEST(fork_from_main_context)
{
    struct mess m;
    pid_t pid;

    CHECK(green_workout() == 0);
    CHECK(mess_make(&m) == 0);
    pid = fork_worker();
    CHECK(child_ok(pid) == 0);
    CHECK(mess_clean(&m) == 0);
}

/* The child of a child: the handlers stay registered, and the state they
 * reset is in use again in the first child. */
TEST(grandchild)
{
    pid_t pid;

    CHECK(green_workout() == 0);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        child_body();
        if (!check_failed_ && child_ok(fork_worker()) < 0)
            check_failed_ = 1;
        _exit(check_failed_ ? 1 : 0);
    }
    CHECK(child_ok(pid) == 0);
}

/* pthread_self is declared const, so the compiler may reuse one call's
 * value for the next; the identity changes under it (hard rule 11). */
static pthread_t (*volatile self_fn)(void) = pthread_self;

/* The child's main context keeps the identity of the green thread that
 * forked (as a thread keeps its pthread_t across fork()), which still
 * names this OS thread; a green thread of the child gets one of its own. */
static pthread_t child_ident;

static void ident_taker(void *arg)
{
    (void)arg;
    child_ident = self_fn();
}

static int ident_kept(pthread_t self)
{
    struct green *g = green_spawn(ident_taker, NULL, NULL);

    CHECK_OR(self_fn() == self, -1);
    CHECK_OR(pthread_kill(self, 0) == 0, -1);
    CHECK_OR(g && green_join(g, 10.0) == 0, -1);
    CHECK_OR(child_ident != self, -1);
    CHECK_OR(pthread_kill(child_ident, 0) == 0, -1);
    return 0;
}

/* Green thread: forks. The child goes on here with no hub, as the main
 * context of its only OS thread; it forks a grandchild from there, then
 * returns instead of calling _exit: the process must then end with status
 * 0 (the hub context below is the parent's, never run in the child). */
static void forker(void *arg)
{
    pid_t *pid = arg, grandchild;
    pthread_t self = self_fn();

    fflush(NULL);
    *pid = fork();
    if (*pid != 0)
        return;
    child_body();
    if (check_failed_ || ident_kept(self) < 0)
        _exit(1);
    fflush(NULL);
    grandchild = fork();
    if (grandchild == 0)
        _exit(ident_kept(self) < 0 ? 1 : 0);
    if (child_ok(grandchild) < 0)
        _exit(1);
}

TEST(fork_from_green_thread)
{
    struct mess m;
    struct green *f;
    pid_t pid = -1;

    CHECK(green_workout() == 0);
    CHECK(mess_make(&m) == 0);
    f = green_spawn(forker, &pid, NULL);
    CHECK(f != NULL);
    CHECK(green_join(f, 10.0) == 0);
    CHECK(pid > 0); /* 0: the child came back to the parent's hub */
    CHECK(child_ok(pid) == 0);
    CHECK(mess_clean(&m) == 0);
}

/* ---- forks while another OS thread is busy ----------------------------- */

#define BUSY_FORKS 150

static volatile int busy_stop;
static sem_t busy_lock;

/* Green threads of the busy OS thread, each in a tight loop on one of the
 * locks a fork may catch held: the lock table (contenders that yield
 * while holding busy_lock, so the others register and park), the
 * resolver queue and glibc's own locks in the lookups the workers make,
 * the identity registry (pthread_kill maps a green identity back to the
 * OS thread). */
static void busy_locker(void *arg)
{
    (void)arg;
    while (!busy_stop) {
        sem_wait(&busy_lock);
        green_yield();
        sem_post(&busy_lock);
    }
}

static void busy_resolver(void *arg)
{
    (void)arg;
    while (!busy_stop)
        resolve_localhost();
}

static pthread_t busy_self;

static void busy_ident(void *arg)
{
    (void)arg;
    __atomic_store_n(&busy_self, self_fn(), __ATOMIC_RELEASE);
    while (!busy_stop) {
        pthread_kill(busy_self, 0);
        green_yield();
    }
}

static void *busy_thread(void *arg)
{
    green_fn fns[] = {busy_locker, busy_locker, busy_locker, busy_resolver,
                      busy_resolver, busy_ident};
    struct green *g[sizeof fns / sizeof fns[0]];

    (void)arg;
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        g[i] = green_spawn(fns[i], NULL, NULL);
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (g[i])
            green_join(g[i], -1);
    return NULL;
}

/* Many quick forks: a lock caught held by the busy thread or one of its
 * resolver workers would hang the child at its first use there. */
TEST(fork_while_another_thread_is_busy)
{
    pthread_t t;

    CHECK(sem_init(&busy_lock, 0, 1) == 0);
    busy_stop = 0;
    CHECK(pthread_create(&t, NULL, busy_thread, NULL) == 0);
    while (!__atomic_load_n(&busy_self, __ATOMIC_ACQUIRE))
        usleep(1000);
    for (int i = 0; i < BUSY_FORKS && !check_failed_; i++) {
        pid_t pid;
        fflush(NULL);
        pid = fork();
        if (pid == 0) {
            alarm(CHILD_ALARM);
            if (green_lookups_and_locks(2) < 0 || plain_workout() < 0)
                _exit(1);
            /* a green thread of a thread the child does not have */
            _exit(pthread_kill(busy_self, 0) == ESRCH ? 0 : 2);
        }
        if (child_ok(pid) < 0)
            break;
    }
    busy_stop = 1;
    CHECK(pthread_join(t, NULL) == 0);
    sem_destroy(&busy_lock);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(fork_from_main_context);
    RUN(grandchild);
    RUN(fork_from_green_thread);
    RUN(fork_while_another_thread_is_busy);
    return CHECK_DONE();
}
