package normalize

// index is an immutable open-addressing table from string to V for the
// small, hot key sets of rows and property-string options. It is cheaper
// than a map for them: a few-byte hash, a power-of-two table at most a
// quarter full, and one string comparison on a hit. The zero value is an
// empty index. It is safe for concurrent use once built.
type index[V any] struct {
	keys []string // "" = empty slot
	vals []V
	mask uint32
}

// newIndex builds an index of m. Keys must be non-empty.
func newIndex[V any](m map[string]V) index[V] {
	n := 8
	for n < 4*len(m) {
		n *= 2
	}
	ix := index[V]{keys: make([]string, n), vals: make([]V, n), mask: uint32(n - 1)}
	for k, v := range m {
		if k == "" {
			panic("normalize: empty key in index")
		}
		i := indexHash(k) & ix.mask
		for ix.keys[i] != "" {
			i = (i + 1) & ix.mask
		}
		ix.keys[i], ix.vals[i] = k, v
	}
	return ix
}

// indexHash mixes the length and the first, middle and last bytes: the
// keys of a row table or an option set differ in those almost always, and
// a collision only costs a probe.
func indexHash(k string) uint32 {
	h := uint32(len(k))
	if len(k) > 0 {
		h = (h ^ uint32(k[0])) * 0x01000193
		h = (h ^ uint32(k[len(k)/2])) * 0x01000193
		h = (h ^ uint32(k[len(k)-1])) * 0x01000193
	}
	h ^= h >> 15
	h *= 0x2c1b3c6d
	h ^= h >> 12
	return h
}

// get returns the value of key and whether it is present.
func (ix *index[V]) get(key string) (V, bool) {
	if len(ix.keys) != 0 && key != "" {
		for i := indexHash(key) & ix.mask; ; i = (i + 1) & ix.mask {
			k := ix.keys[i]
			if k == "" {
				break
			}
			if k == key {
				return ix.vals[i], true
			}
		}
	}
	var zero V
	return zero, false
}
