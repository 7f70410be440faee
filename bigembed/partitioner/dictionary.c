/* The import's node dictionary: (entity type, name) -> a dense id in first-seen order.

   An open-addressing table of 64-bit slots (0 = empty, else the top 32 bits of the name's hash
   and id + 1), whose names live end to end in one growing byte buffer. A probe compares the
   hash's top bits first and then the whole name and type, so two names that hash alike are
   always two nodes. Names are looked up a batch at a time: their hashes are computed and their
   slots prefetched first, so that the cache misses of a table far bigger than the caches
   overlap instead of queueing.

   Used through ctypes by bigembed/partitioner/dictionary.py; every function returns without
   touching Python, so the caller's other thread (parsing the next block) runs meanwhile. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef BATCH
#define BATCH 64
#endif

int64_t bigembed_dictionary_abi(void) { return 2; }

/* A slot: the name's hash (never 0 once used), its id, its length and type, and its first
   INLINE bytes, so that most lookups touch one cache line: names up to INLINE bytes are
   compared in the slot, longer ones there first and then in the name buffer. */
#define INLINE 16
typedef struct {
    uint64_t hash;
    uint32_t id;
    uint16_t len;         /* min(length, 0xffff); the full length is in starts */
    uint16_t type;
    unsigned char head[INLINE];
} slot_t;

typedef struct {
    slot_t *slots;
    uint64_t mask;        /* slots - 1 (a power of two) */
    int64_t count;        /* distinct names */
    int64_t cap;          /* room in starts (cap + 1 entries) and types */
    int64_t *starts;      /* name i is bytes[starts[i] : starts[i + 1]] */
    int32_t *types;
    char *bytes;
    int64_t used, room;   /* bytes in use and allocated */
    uint64_t hash_mask;   /* all ones; 0 in tests, to make every name hash alike */
} dict_t;

/* Zeroed slots from the kernel, in huge pages where it allows them: the table is touched at
   random, and with 4 KiB pages nearly every lookup would also miss the TLB. */
static slot_t *alloc_slots(uint64_t size) {
    size_t bytes = size * sizeof(slot_t);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

static void free_slots(slot_t *slots, uint64_t size) {
    if (slots) munmap(slots, size * sizeof(slot_t));
}

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load64(const unsigned char *p, int64_t n) {
    /* n (<= 8) bytes as a little-endian word, whatever the machine's byte order */
    uint64_t w = 0;
    for (int64_t i = n - 1; i >= 0; i--) w = (w << 8) | p[i];
    return w;
}

static inline uint64_t load64_full(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

static inline uint64_t hash_name(const unsigned char *p, int64_t len, int32_t type, uint64_t hash_mask) {
    uint64_t h = 0x243f6a8885a308d3ULL ^ ((uint64_t)len * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)(uint32_t)type << 40);
    while (len >= 8) {
        h = rotl(h ^ (load64_full(p) * 0xff51afd7ed558ccdULL), 31) * 0xc4ceb9fe1a85ec53ULL;
        p += 8;
        len -= 8;
    }
    if (len) h = rotl(h ^ (load64(p, len) * 0xff51afd7ed558ccdULL), 31) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
    return (h & hash_mask) | 1; /* 0 marks an empty slot */
}

void bigembed_dict_free(dict_t *d) {
    if (!d) return;
    free_slots(d->slots, d->mask + 1);
    free(d->starts);
    free(d->types);
    free(d->bytes);
    free(d);
}

dict_t *bigembed_dict_new(int64_t expected, uint64_t hash_mask) {
    dict_t *d = calloc(1, sizeof(dict_t));
    if (!d) return NULL;
    uint64_t size = 1024;
    while (size * 3 < (uint64_t)expected * 4) size <<= 1;
    d->slots = alloc_slots(size);
    d->mask = size - 1;
    d->cap = 1024;
    d->starts = malloc((d->cap + 1) * sizeof(int64_t));
    d->types = malloc(d->cap * sizeof(int32_t));
    d->room = 1 << 16;
    d->bytes = malloc(d->room);
    d->hash_mask = hash_mask;
    if (!d->slots || !d->starts || !d->types || !d->bytes) {
        bigembed_dict_free(d);
        return NULL;
    }
    d->starts[0] = 0;
    return d;
}

int64_t bigembed_dict_count(const dict_t *d) { return d->count; }

int64_t bigembed_dict_bytes(const dict_t *d) { return d->used; }

/* Bytes held: the slots, the name buffer and the per-name arrays as allocated. */
int64_t bigembed_dict_memory(const dict_t *d) {
    return (int64_t)((d->mask + 1) * sizeof(slot_t)) + d->room + (d->cap + 1) * (int64_t)sizeof(int64_t) +
           d->cap * (int64_t)sizeof(int32_t);
}

/* Bytes held once `adding` more names arrive: more slots if they would make the table grow
   (while growing, the old slots and twice as many new ones are held at once). */
int64_t bigembed_dict_memory_after(const dict_t *d, int64_t adding) {
    int64_t held = bigembed_dict_memory(d);
    uint64_t size = d->mask + 1;
    while ((uint64_t)(d->count + adding) * 4 > size * 3) {
        size *= 2;
        held += (int64_t)(size * sizeof(slot_t));
    }
    return held;
}

static int grow_slots(dict_t *d) {
    uint64_t size = (d->mask + 1) * 2, mask = size - 1;
    slot_t *slots = alloc_slots(size);
    if (!slots) return -1;
    for (uint64_t k = 0; k <= d->mask; k++) {
        if (!d->slots[k].hash) continue;
        uint64_t at = d->slots[k].hash & mask;
        while (slots[at].hash) at = (at + 1) & mask;
        slots[at] = d->slots[k];
    }
    free_slots(d->slots, d->mask + 1);
    d->slots = slots;
    d->mask = mask;
    return 0;
}

static int add_name(dict_t *d, const unsigned char *p, int64_t len, int32_t type, uint64_t h, slot_t *slot) {
    if (d->count >= 0xffffffffLL - 1) return -2; /* ids are uint32 */
    if (d->count == d->cap) {
        int64_t cap = d->cap * 2;
        int64_t *starts = realloc(d->starts, (cap + 1) * sizeof(int64_t));
        if (!starts) return -1;
        d->starts = starts;
        int32_t *types = realloc(d->types, cap * sizeof(int32_t));
        if (!types) return -1;
        d->types = types;
        d->cap = cap;
    }
    if (d->used + len > d->room) {
        int64_t room = d->room * 2;
        while (room < d->used + len) room *= 2;
        char *bytes = realloc(d->bytes, room);
        if (!bytes) return -1;
        d->bytes = bytes;
        d->room = room;
    }
    memcpy(d->bytes + d->used, p, len);
    d->used += len;
    d->types[d->count] = type;
    d->starts[d->count + 1] = d->used;
    slot->hash = h;
    slot->id = (uint32_t)d->count;
    slot->len = len < 0xffff ? (uint16_t)len : 0xffff;
    slot->type = (uint16_t)type;
    memset(slot->head, 0, INLINE);
    memcpy(slot->head, p, len < INLINE ? len : INLINE);
    d->count++;
    return 0;
}

/* Whether the slot holds the name p[0:len] of type `type`, whose first INLINE bytes,
   zero-padded, are `head`. */
static inline int same_name(const dict_t *d, const slot_t *slot, const unsigned char *head,
                            const unsigned char *p, int64_t len, int32_t type) {
    if (slot->type != (uint16_t)type || slot->len != (len < 0xffff ? (uint16_t)len : 0xffff)) return 0;
    if (memcmp(slot->head, head, INLINE)) return 0; /* a fixed size: compiled to two word compares */
    if (len <= INLINE) return 1;
    int64_t a = d->starts[slot->id];
    return d->starts[slot->id + 1] - a == len && !memcmp(d->bytes + a, p, len);
}

/* The ids of n names: name i is data[offsets[i] : offsets[i + 1]] (offsets int32 when !wide,
   int64 when wide), of entity type types[i] (or type_const when types is NULL; types must be
   below 2^16). New names get the next ids. Returns 0, -1 when out of memory, -2 past 2^32 - 2
   names. */
int bigembed_dict_intern(dict_t *d, int64_t n, const void *offsets, int wide, const char *data,
                         const int32_t *types, int32_t type_const, uint32_t *out) {
    const int32_t *o32 = offsets;
    const int64_t *o64 = offsets;
    uint64_t hashes[BATCH];
    unsigned char heads[BATCH][INLINE];
    for (int64_t base = 0; base < n; base += BATCH) {
        int64_t m = n - base < BATCH ? n - base : BATCH;
        if ((uint64_t)(d->count + m) * 4 > (d->mask + 1) * 3 && grow_slots(d)) return -1;
        for (int64_t k = 0; k < m; k++) {
            int64_t i = base + k;
            int64_t s = wide ? o64[i] : o32[i], e = wide ? o64[i + 1] : o32[i + 1];
            int32_t t = types ? types[i] : type_const;
            hashes[k] = hash_name((const unsigned char *)data + s, e - s, t, d->hash_mask);
            memset(heads[k], 0, INLINE);
            memcpy(heads[k], data + s, e - s < INLINE ? e - s : INLINE);
            __builtin_prefetch(&d->slots[hashes[k] & d->mask]);
        }
        for (int64_t k = 0; k < m; k++) {
            int64_t i = base + k;
            int64_t s = wide ? o64[i] : o32[i], e = wide ? o64[i + 1] : o32[i + 1], len = e - s;
            const unsigned char *p = (const unsigned char *)data + s;
            int32_t t = types ? types[i] : type_const;
            uint64_t h = hashes[k], at = h & d->mask;
            for (;;) {
                slot_t *slot = &d->slots[at];
                if (!slot->hash) {
                    int rc = add_name(d, p, len, t, h, slot);
                    if (rc) return rc;
                    out[i] = (uint32_t)(d->count - 1);
                    break;
                }
                if (slot->hash == h && same_name(d, slot, heads[k], p, len, t)) {
                    out[i] = slot->id;
                    break;
                }
                at = (at + 1) & d->mask;
            }
        }
    }
    return 0;
}

/* Copy out the names in id order: starts (count + 1 int64), bytes (bigembed_dict_bytes) and
   types (count int32). */
void bigembed_dict_export(const dict_t *d, int64_t *starts, char *bytes, int32_t *types) {
    memcpy(starts, d->starts, (d->count + 1) * sizeof(int64_t));
    memcpy(bytes, d->bytes, d->used);
    memcpy(types, d->types, d->count * sizeof(int32_t));
}
