# cython: language_level=3, boundscheck=False, wraparound=False
"""A listener's connection limits, listener-wide: `Cps` and `MaxConnections` hold exactly
however the kernel spreads connections over the workers (SO_REUSEPORT).

The parent makes one shared memory file (a memfd) of slots and hands it to every worker;
its `DeltaEncoder` gives each listener a slot and a generation (a slot used again gets the
next generation, so the connections of a removed listener no longer touch it). A slot holds:
- `total`: the listener's open connections over all workers, the generation in the high 32
  bits; a connection is admitted by one compare-and-swap that checks `MaxConnections`;
- `tat`: the rate as GCRA, the theoretical arrival time (ns, CLOCK_MONOTONIC) of the next
  connection: one at `now` is admitted while tat - now <= 1 s - 1/Cps, and moves tat on by
  1/Cps: a token bucket of one second's connections in one word, lock-free;
- one column per worker of its own open connections: when a worker dies, `recover` takes
  them off `total`, so a crashed worker's connections do not hold the limit down.
Every update is an atomic compare-and-swap: no lock that a dying worker could keep.
"""

import os

from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <time.h>
    #include <sys/mman.h>

    static int64_t cw_now_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
    }

    /* +1 on a count word (generation << 32 | count) unless the generation differs (-1)
       or the count is at `cap` (0; cap 0: no cap); 1 when counted. */
    static int cw_inc(uint64_t *w, uint32_t gen, uint32_t cap) {
        uint64_t old = __atomic_load_n(w, __ATOMIC_RELAXED);
        for (;;) {
            if ((uint32_t)(old >> 32) != gen) return -1;
            if (cap && (uint32_t)old >= cap) return 0;
            if (__atomic_compare_exchange_n(w, &old, old + 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED)) return 1;
        }
    }

    /* -by (at most down to 0) on a count word of generation `gen`; another's: nothing.
       Returns how much was taken off. */
    static uint32_t cw_dec(uint64_t *w, uint32_t gen, uint32_t by) {
        uint64_t old = __atomic_load_n(w, __ATOMIC_RELAXED);
        for (;;) {
            uint32_t count = (uint32_t)old, take = by < count ? by : count;
            if ((uint32_t)(old >> 32) != gen || take == 0) return 0;
            if (__atomic_compare_exchange_n(w, &old, old - take, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED)) return take;
        }
    }

    /* GCRA: 1 when a connection at `now` is within the rate (and tat moved on), else 0. */
    static int cw_rate(int64_t *tat, int64_t now, int64_t interval, int64_t tolerance) {
        int64_t old = __atomic_load_n(tat, __ATOMIC_RELAXED);
        for (;;) {
            int64_t base = old > now ? old : now;
            if (base - now > tolerance) return 0;
            if (__atomic_compare_exchange_n(tat, &old, base + interval, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED)) return 1;
        }
    }

    static uint64_t cw_load(uint64_t *w) { return __atomic_load_n(w, __ATOMIC_ACQUIRE); }
    static void cw_store(uint64_t *w, uint64_t v) { __atomic_store_n(w, v, __ATOMIC_RELEASE); }
    """
    int64_t cw_now_ns()
    int cw_inc(uint64_t *w, uint32_t gen, uint32_t cap)
    uint32_t cw_dec(uint64_t *w, uint32_t gen, uint32_t by)
    int cw_rate(int64_t *tat, int64_t now, int64_t interval, int64_t tolerance)
    uint64_t cw_load(uint64_t *w)
    void cw_store(uint64_t *w, uint64_t v)
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    void *MAP_FAILED
    int PROT_READ, PROT_WRITE, MAP_SHARED

cdef enum:
    TOTAL = 0
    TAT = 1
    COLUMNS = 2

SECOND_NS = 1_000_000_000


cdef class SharedLimits:
    """The slots of every listener's limits, mapped from a memfd shared by all workers."""

    cdef uint64_t *_base
    cdef size_t _size
    cdef readonly int capacity, workers, fd

    def __cinit__(self, int capacity, int workers, int fd=-1):
        """A new memfd of `capacity` slots for `workers` workers, or (fd ≥ 0) the parent's,
        which this process then holds mapped (the descriptor is closed)."""
        if capacity < 1 or workers < 1:
            raise ValueError("capacity and workers must be at least 1")
        self.capacity, self.workers = capacity, workers
        self._size = <size_t>capacity * (COLUMNS + workers) * sizeof(uint64_t)
        owned = fd < 0
        if owned:
            fd = os.memfd_create("certwatch-limits", os.MFD_CLOEXEC)
            os.ftruncate(fd, self._size)
        cdef void *base = mmap(NULL, self._size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if base == MAP_FAILED:
            if owned:
                os.close(fd)
            raise OSError("mmap of the shared connection limits failed")
        self._base = <uint64_t *>base
        self.fd = fd if owned else -1
        if not owned:
            os.close(fd)

    def __dealloc__(self):
        if self._base != NULL:
            munmap(self._base, self._size)
        if self.fd >= 0:
            os.close(self.fd)

    cdef inline uint64_t *_slot(self, int slot) except NULL:
        if slot < 0 or slot >= self.capacity:
            raise IndexError(f"limit slot {slot} is outside 0..{self.capacity - 1}")
        return self._base + <size_t>slot * (COLUMNS + self.workers)

    def assign(self, int slot):
        """Give `slot` to a new listener: no connection, a full rate; its generation."""
        cdef uint64_t *s = self._slot(slot)
        cdef uint64_t generation = ((cw_load(s + TOTAL) >> 32) + 1) & 0xFFFFFFFF
        cdef int i
        for i in range(self.workers):
            cw_store(s + COLUMNS + i, generation << 32)
        cw_store(s + TAT, 0)
        cw_store(s + TOTAL, generation << 32)
        return generation

    cpdef bint admit(
        self, int slot, uint32_t generation, int worker, int max_connections, int cps,
        int64_t now=-1,
    ) except -1:
        """Whether a new connection is served (then it is counted open until `release`);
        `now` (ns, CLOCK_MONOTONIC) is the current time unless given."""
        cdef uint64_t *s = self._slot(slot)
        cdef int64_t interval
        cdef int counted
        if max_connections and <uint32_t>cw_load(s + TOTAL) >= <uint32_t>max_connections:
            return False
        if cps:
            if now < 0:
                now = cw_now_ns()
            interval = SECOND_NS // cps
            if not cw_rate(<int64_t *>(s + TAT), now, interval, SECOND_NS - interval):
                return False
        counted = cw_inc(s + TOTAL, generation, max_connections)
        if counted == 0:  # another worker took the last place meanwhile
            return False
        if counted == 1:
            cw_inc(s + COLUMNS + worker, generation, 0)
        return True  # -1: the slot is another listener's now; served, not counted

    cpdef int release(self, int slot, uint32_t generation, int worker) except -1:
        """A connection `admit` served has closed (one `recover` took off already: nothing)."""
        cdef uint64_t *s = self._slot(slot)
        if cw_dec(s + COLUMNS + worker, generation, 1):
            cw_dec(s + TOTAL, generation, 1)
        return 0

    def recover(self, int worker, int slots):
        """Worker `worker` is gone: take its open connections off the first `slots` slots."""
        cdef uint64_t *s
        cdef uint64_t column
        cdef int i
        for i in range(min(slots, self.capacity)):
            s = self._slot(i)
            column = cw_load(s + COLUMNS + worker)
            if <uint32_t>column:
                cw_dec(s + TOTAL, <uint32_t>(column >> 32), <uint32_t>column)
                cw_store(s + COLUMNS + worker, (column >> 32) << 32)

    def open(self, int slot):
        """The listener's open connections in `slot`, over all workers."""
        return <uint32_t>cw_load(self._slot(slot) + TOTAL)
