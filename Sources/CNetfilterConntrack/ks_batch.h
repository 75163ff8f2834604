// Conntracks handed to a ks_ct_sink in batches: shared by the library's reader
// (ks_conntrack.c) and the direct one (ks_parse.c). Private to this module's C files.
#ifndef KS_BATCH_H
#define KS_BATCH_H

#include "ks_conntrack.h"

enum { KS_BATCH = 512 };

struct ks_batch {
    ks_ct cts[KS_BATCH];
    int count;
    int delivered;
    ks_ct_sink sink;
    void *context;
};

/// Hands what the batch holds to its sink.
static inline void ks_batch_flush(struct ks_batch *b) {
    if (b->count > 0) {
        b->sink(b->cts, b->count, b->context);
        b->delivered += b->count;
        b->count = 0;
    }
}

/// The slot for the next conntrack; `ks_batch_added` once it is filled in.
static inline ks_ct *ks_batch_slot(struct ks_batch *b) { return &b->cts[b->count]; }

static inline void ks_batch_added(struct ks_batch *b) {
    if (++b->count == KS_BATCH) ks_batch_flush(b);
}

#endif
