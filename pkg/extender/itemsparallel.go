package extender

import (
	"bytes"
	"encoding/json"
	"runtime"
	"sync"
)

// A full-Node body is thousands of Node objects, and scanning them is most of a request's
// cost (about 19 ms of the 30 for 5,000 Nodes, 11 MB). kube-scheduler calls an extender
// one pod at a time and then waits, so while one request is scanned the extender's other
// cores are idle: the items array is cut into chunks scanned at once, one goroutine each.
//
// A chunk can only start at an item boundary, and where one item ends is known only by
// scanning everything before it. So the cuts are guessed and then proven: past each k-th
// of the array, the first `},{"metadata":` (how encoding/json joins two v1.Node items, the
// way kube-scheduler encodes them) is taken as the start of an item, and that chunk is
// scanned from there as if it were. The guess holds exactly when the chunk before it,
// scanned item by item, steps from one item to the next right onto that '{': the state
// there (inside the items array, an item expected) is the one the guess assumed, and a
// scan from the same state over the same bytes has the same outcome. A guess that lands
// inside an item (a nested array of objects, a string) is passed by the chunk before it,
// which then scans on to the end of the array itself. Any error inside a proven chunk, or
// anything unusual, makes the whole array be scanned again in the request's goroutine, so
// that errors read exactly as a one-pass scan reports them.

// parallelItemsMinBytes is the least of the body, from the items array on, worth cutting:
// below it the goroutines cost more than they save.
const parallelItemsMinBytes = 1 << 20

// maxItemChunks bounds the goroutines one request uses.
const maxItemChunks = 4

// itemBoundary is what lies between two items of a NodeList as encoding/json writes
// v1.Node (metadata first, no whitespace): the end of one, the start of the next.
var itemBoundary = []byte(`},{"metadata":`)

// itemChunk is what one chunk's scan found.
type itemChunk struct {
	items  []json.RawMessage
	names  []string
	missed []string
	merged bool // a null item (see rawNodeList.merged)
	// linked: the scan stepped from an item onto the next chunk's start. Otherwise, when
	// err is nil, it reached the array's ']' and end is the index after it.
	linked bool
	end    int
	err    error
}

// itemsInChunks scans the items array at p.i ('[') in up to p.chunks pieces at once when
// the rest of the body is at least p.chunkMinBytes, filling l.Items and l.names and moving
// p.i past the array as the one-pass scan (p.elements over p.nodeItem) would. It reports
// false, with p and l untouched, when it did not: too little to cut, one chunk, no
// boundary found, or an error to be reported by the one-pass scan.
func (p *jsonScanner) itemsInChunks(l *rawNodeList) bool {
	chunks := p.chunks
	start := p.i
	span := len(p.b) - start
	if chunks < 2 || span < p.chunkMinBytes || p.depth+1 > maxDepth {
		return false
	}
	first := skipWS(p.b, start+1)
	if first >= len(p.b) || p.b[first] == ']' {
		return false
	}
	starts := []int{first}
	for w := 1; w < chunks; w++ {
		from := max(start+w*span/chunks, starts[len(starts)-1]+1)
		j := bytes.Index(p.b[from:], itemBoundary)
		if j < 0 {
			break
		}
		starts = append(starts, from+j+2) // the '{' after "},"
	}
	if len(starts) < 2 {
		return false
	}
	found := make([]itemChunk, len(starts))
	var wg sync.WaitGroup
	for w := 1; w < len(starts); w++ {
		wg.Go(func() { found[w] = p.scanItemChunk(starts[w], nextStart(starts, w)) })
	}
	found[0] = p.scanItemChunk(starts[0], nextStart(starts, 0))
	wg.Wait()

	// Follow the proven chunks: 0 is, and each one that linked proves the next.
	last := 0
	for found[last].err == nil && found[last].linked {
		last++
	}
	if found[last].err != nil {
		return false
	}
	n := 0
	for _, c := range found[:last+1] {
		n += len(c.items)
	}
	l.Items, l.names = make([]json.RawMessage, 0, n), make([]string, 0, n)
	for _, c := range found[:last+1] {
		l.Items = append(l.Items, c.items...)
		l.names = append(l.names, c.names...)
		l.merged = l.merged || c.merged
		if room := maxMissed - len(p.missed); room > 0 {
			p.missed = append(p.missed, c.missed[:min(room, len(c.missed))]...)
		}
	}
	p.i = found[last].end
	l.chunks = last + 1
	return true
}

func nextStart(starts []int, w int) int {
	if w+1 < len(starts) {
		return starts[w+1]
	}
	return -1
}

// scanItemChunk scans items from index from (the first byte of an item) as p.elements
// does inside the items array, until it steps from an item onto stop (linked) or reaches
// the array's ']'. It shares p's body and known names and nothing it writes.
func (p *jsonScanner) scanItemChunk(from, stop int) (c itemChunk) {
	q := &jsonScanner{b: p.b, i: from, depth: p.depth + 1, known: p.known}
	for {
		itemStart := q.i
		name, null, err := q.nodeItem(-1) // the index is unknown here; errors are re-scanned
		if err != nil {
			c.err = err
			return c
		}
		c.merged = c.merged || null
		c.items = append(c.items, q.b[itemStart:q.i])
		c.names = append(c.names, name)
		q.ws()
		if q.i >= len(q.b) {
			c.err = q.errorf("unterminated array")
			return c
		}
		switch q.b[q.i] {
		case ',':
			q.ws1()
			if q.i >= len(q.b) {
				c.err = q.errorf("unexpected end of input")
				return c
			}
			if q.i == stop {
				c.linked, c.missed = true, q.missed
				return c
			}
		case ']':
			c.end, c.missed = q.i+1, q.missed
			return c
		default:
			c.err = q.errorf("expected ',' or ']' in array")
			return c
		}
	}
}

// ws1 steps over one byte (a ',') and the whitespace after it.
func (p *jsonScanner) ws1() { p.i = skipWS(p.b, p.i+1) }

// itemChunks is how many pieces a large items array is cut into: one per CPU the process
// may use (GOMAXPROCS follows the container's CPU limit), at most maxItemChunks.
func itemChunks() int { return min(runtime.GOMAXPROCS(0), maxItemChunks) }
