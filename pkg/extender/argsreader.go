package extender

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petfabric/petfabric/pkg/placement"
)

// This file is the extender's ExtenderArgs reader. It exists for full-Node mode
// (nodeCacheCapable: false, the scheduler's default), where the body is thousands of
// complete Node objects that must go back byte for byte: splitting the NodeList into raw
// items and reading only each item's metadata.name in one pass is about 14 times faster
// than encoding/json decoding the same items as json.RawMessage and then each item's name
// (BenchmarkDecodeArgs: about 19 ms against 260 ms for 5,000 Nodes, 11 MB, on a loaded
// two-core machine; 0.9-1 GB/s for 500 Nodes; one goroutine). Strings, most of the bytes,
// are skipped eight bytes at a time, and values nobody reads are walked in a loop, not
// recursively. A large items array is also cut into chunks scanned at once on the
// process's other cores (itemsparallel.go): 5,000 Nodes in about 10 ms on two cores.
// For names-only bodies it is about three times faster than encoding/json, and with the
// handler's set of known names (decodeArgsInto) it allocates nothing per name.

// decodeArgs parses an ExtenderArgs body. It validates the whole document as strictly as
// json.Valid, decodes what the extender reads of the Pod (decodePod), NodeNames to strings
// and keeps Nodes raw, and it must mean exactly what encoding/json (what kube-scheduler
// and any proxy use) makes of the same bytes: argsreader_equiv_test.go fuzzes the decoded
// values of the two against each other.
//
// encoding/json matches the keys Pod, Nodes and NodeNames case-insensitively, and merges
// rather than replaces: a second "Pod" decodes into the first Pod, a second "items" array
// decodes element by element into the Nodes of the first, a null element leaves the
// element it lands on as it was. The fast reader handles documents where each of those
// keys occurs once (everything kube-scheduler sends); for any other it hands the whole
// document to decodeArgsMerged, which lets encoding/json apply its own rules.
//
// One difference remains, by design: of each Nodes item only metadata.name is
// type-checked, and of the Pod only the fields the extender reads (slimPod: name,
// namespace, volumes). The items are returned to the scheduler byte for byte, and decoding
// thousands of Nodes, or a Pod's containers, only to validate them would cost most of the
// request; the rest is still validated as JSON.
func decodeArgs(b []byte, a *args) error { return decodeArgsInto(b, a, nil, nil) }

// decodeArgsInto is decodeArgs with the node names the extender knows (nameSet): a name
// of NodeNames, or of a Nodes item, found there is the index's string rather than a new
// one, so a request of known names allocates nothing per name, and each of NodeNames
// comes with its NodeRef (a.refs). Unknown names are allocated as usual and listed in
// a.missedNames. NodeNames and its refs go in scratch when it is large enough (the
// handler's pooled slices, given back once the answer is written).
func decodeArgsInto(b []byte, a *args, known nameSet, scratch *nameScratch) error {
	return decodeArgsChunked(b, a, known, scratch, itemChunks(), parallelItemsMinBytes)
}

// decodeArgsChunked is decodeArgsInto with a large Nodes.items array scanned in up to
// chunks pieces at once when the body from the array on is at least minBytes (see
// itemsInChunks; tests cut small documents to check that the result is the same).
func decodeArgsChunked(b []byte, a *args, known nameSet, scratch *nameScratch, chunks, minBytes int) error {
	p := &jsonScanner{b: b, known: known, scratch: scratch, chunks: chunks, chunkMinBytes: minBytes}
	p.ws()
	if p.i < len(b) && b[p.i] == 'n' {
		// A top-level null is an empty ExtenderArgs to encoding/json.
		if err := p.literal("null"); err != nil {
			return err
		}
		p.ws()
		if p.i != len(b) {
			return p.errorf("data after the top-level value")
		}
		return nil
	}
	if p.i >= len(b) || b[p.i] != '{' {
		return p.errorf("ExtenderArgs must be a JSON object")
	}
	var pod, nodes []byte
	var names []string
	var refs []placement.NodeRef
	var namesPlain bool
	var list *rawNodeList
	var pods, nodeLists, nameLists int
	var nullName bool
	if err := p.members(func(key []byte) error {
		start := p.i
		var err error
		switch {
		case keyIs(key, "Pod"):
			pods++
			err = p.value()
			pod = b[start:p.i]
		case keyIs(key, "Nodes"):
			nodeLists++
			list = nil
			if b[p.i] == '{' {
				// Split the NodeList into items and read their names in this same pass.
				list, err = p.nodeList()
			} else {
				err = p.value()
			}
			nodes = b[start:p.i]
		case keyIs(key, "NodeNames"):
			nameLists++
			names, refs, namesPlain, err = p.nodeNames(&nullName)
		default:
			err = p.value()
		}
		return err
	}); err != nil {
		return err
	}
	p.ws()
	if p.i != len(b) {
		return p.errorf("data after the top-level object")
	}
	if nodes != nil && !isNull(nodes) && (nodes[0] != '{' || list == nil) {
		return errors.New("field Nodes must be a NodeList object")
	}
	if pods > 1 || nodeLists > 1 || nameLists > 1 || nullName || (list != nil && list.merged) {
		return decodeArgsMerged(b, a)
	}
	if pod != nil && !isNull(pod) {
		var err error
		if a.Pod, err = decodePod(pod); err != nil {
			return fmt.Errorf("field Pod: %w", err)
		}
	}
	if nodes != nil && !isNull(nodes) {
		if err := list.check(); err != nil {
			return err
		}
		a.Nodes, a.list = nodes, list
	}
	if names != nil {
		a.NodeNames = &names
		a.namesPlain = namesPlain
		if len(refs) == len(names) {
			a.refs = refs
		}
	}
	a.missedNames = p.missed
	return nil
}

// check applies to a NodeList what decoding it into a v1.NodeList would check and what
// the extender relies on: ListMeta types, and a name on every item.
func (l *rawNodeList) check() error {
	if len(l.Metadata) > 0 && !isNull(l.Metadata) {
		var lm metav1.ListMeta
		if err := json.Unmarshal(l.Metadata, &lm); err != nil {
			return fmt.Errorf("field Nodes.metadata: %w", err)
		}
	}
	for i, n := range l.names {
		if n == "" {
			return fmt.Errorf("field Nodes.items[%d] has no metadata.name", i)
		}
	}
	return nil
}

// mergedArgs is ExtenderArgs as decodeArgsMerged has encoding/json decode it: the Pod's
// fields the extender reads (slimPod), NodeNames as the scheduler's type, the NodeList's
// metadata and items as mergedObjects.
type mergedArgs struct {
	Pod       *slimPod
	Nodes     *mergedNodeList
	NodeNames *[]string
}

// mergedNodeList has v1.NodeList's JSON fields (TypeMeta inline, ListMeta, items).
type mergedNodeList struct {
	Kind       string         `json:"kind"`
	APIVersion string         `json:"apiVersion"`
	Metadata   mergedObject   `json:"metadata"`
	Items      []mergedObject `json:"items"`
}

// mergedObject stands in for a struct (a Node, a ListMeta) that encoding/json may decode
// several objects into, one after the other: for a duplicate key, and for the elements of
// a second array decoded over a first (encoding/json reuses a slice's elements, even those
// between its length and capacity). Decoding objects one after the other into a struct is
// decoding their members, in that order, as one object; so mergedObject keeps the members
// and Bytes joins them. null leaves a struct as it is, and adds nothing.
type mergedObject struct {
	members [][]byte
	set     bool
}

func (m *mergedObject) UnmarshalJSON(b []byte) error {
	switch b[0] {
	case 'n':
		return nil
	case '{':
		m.set = true
		inner := bytes.TrimSpace(b[1 : len(b)-1])
		if len(inner) > 0 {
			m.members = append(m.members, inner)
		}
		return nil
	}
	return fmt.Errorf("json: cannot unmarshal %s into an object", jsonKind(b[0]))
}

// Bytes is the one object whose members are all the members seen, in order.
func (m *mergedObject) Bytes() []byte {
	out := []byte{'{'}
	for i, mem := range m.members {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, mem...)
	}
	return append(out, '}')
}

// decodeArgsMerged decodes a document the fast reader cannot (duplicate keys, null
// elements) with encoding/json itself, so that every merge rule is encoding/json's, and
// converts the result: Nodes items rebuilt from their merged members
// (kept verbatim, so unknown fields and exact timestamps survive). kube-scheduler never
// sends such documents; this path only has to be right, not fast.
func decodeArgsMerged(b []byte, a *args) error {
	var m mergedArgs
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("ExtenderArgs: %w", err)
	}
	*a = args{NodeNames: m.NodeNames}
	if m.Pod != nil {
		a.Pod = m.Pod.pod()
	}
	if m.Nodes != nil {
		l := &rawNodeList{Kind: m.Nodes.Kind, APIVersion: m.Nodes.APIVersion}
		if m.Nodes.Metadata.set {
			l.Metadata = m.Nodes.Metadata.Bytes()
		}
		all := make([]int, len(m.Nodes.Items))
		for i := range m.Nodes.Items {
			raw := m.Nodes.Items[i].Bytes()
			p := &jsonScanner{b: raw}
			name, _, err := p.nodeItem(i)
			if err != nil {
				return err
			}
			l.Items = append(l.Items, raw)
			l.names = append(l.names, name)
			all[i] = i
		}
		if err := l.check(); err != nil {
			return err
		}
		a.list = l
		a.Nodes = appendNodeList(nil, l, all)
	}
	return nil
}

func isNull(v []byte) bool { return bytes.Equal(v, []byte("null")) }

// keyIs compares a raw JSON key (with its quotes) to name the way encoding/json matches
// field names: case-insensitively; escaped keys are decoded first.
func keyIs(raw []byte, name string) bool {
	k := raw[1 : len(raw)-1]
	if bytes.IndexByte(k, '\\') >= 0 {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return false
		}
		k = []byte(s)
	}
	return bytes.EqualFold(k, []byte(name))
}

// nodeNames parses the NodeNames value at p.i: null (nil), or an array of strings. A null
// element sets *hasNull: encoding/json leaves the element it lands on unchanged, which only
// decodeArgsMerged can follow. plain says every name came as printable ASCII other than
// '"', '\\', '<', '>' and '&': its JSON form is its bytes in quotes (see appendPlain).
//
// A name is scanned to its closing quote in one loop; a plain one is looked up in
// p.known without allocating (the conversion in a map index does not copy) and taken from
// there, so the names slice refers to the extender's own strings, never to the request
// buffer, and outlives the request safely. Other names go through stringValue.
func (p *jsonScanner) nodeNames(hasNull *bool) (names []string, refs []placement.NodeRef, plain bool, err error) {
	switch p.b[p.i] {
	case 'n':
		return nil, nil, false, p.literal("null")
	case '[':
	default:
		return nil, nil, false, p.errorf("field NodeNames is not an array")
	}
	// Room for every element, judged by the commas that follow (each element takes at
	// least three bytes), so that thousands of names are not appended through regrowth.
	rest := p.b[p.i:]
	n := min(bytes.Count(rest, []byte{','})+1, len(rest)/3+1)
	if p.scratch != nil && cap(p.scratch.names) >= n {
		names = p.scratch.names[:0]
	} else {
		names = make([]string, 0, n)
	}
	withRefs := p.known != nil
	if withRefs {
		if p.scratch != nil && cap(p.scratch.refs) >= n {
			refs = p.scratch.refs[:0]
		} else {
			refs = make([]placement.NodeRef, 0, n)
		}
	}
	plain = true
	err = p.elements(func() error {
		switch p.b[p.i] {
		case 'n':
			*hasNull = true
			names = append(names, "")
			if withRefs {
				refs = append(refs, placement.NodeRef{})
			}
			return p.literal("null")
		case '"':
			s, ref, isPlain, err := p.nodeName()
			plain = plain && isPlain
			names = append(names, s)
			if withRefs {
				refs = append(refs, ref)
			}
			return err
		}
		return p.errorf("field NodeNames must be an array of strings")
	})
	return names, refs, plain, err
}

// nodeName consumes the string at p.i, a node name, and returns it decoded. A plain name
// (see nodeNames) is scanned to its closing quote in one loop and looked up in p.known
// without allocating (the conversion in a map index does not copy); the string returned
// is then the extender's own, never one over the request buffer, so it may outlive the
// request. A name not found there is allocated and remembered in p.missed.
func (p *jsonScanner) nodeName() (s string, ref placement.NodeRef, plain bool, err error) {
	b, start := p.b, p.i+1
	j := start
	for j < len(b) && jsonPlain[b[j]] {
		j++
	}
	if j < len(b) && b[j] == '"' {
		k, ok := p.known[string(b[start:j])]
		s, ref = k.name, k.ref
		if !ok {
			s = string(b[start:j])
			if len(p.missed) < maxMissed {
				p.missed = append(p.missed, s)
			}
		}
		p.i = j + 1
		return s, ref, true, nil
	}
	s, err = p.stringValue()
	return s, ref, false, err
}

// nameSet is the extender's set of known node names (see knownNames): each name maps to
// the string the placement index holds for it and the node's NodeRef (zero for a name
// without a report), so that a request's names are neither allocated nor looked up twice.
type nameSet map[string]knownName

type knownName struct {
	name string
	ref  placement.NodeRef
}

// nameScratch is a request's pooled room for its NodeNames and their NodeRefs.
type nameScratch struct {
	names []string
	refs  []placement.NodeRef
}

// maxMissed bounds the unknown names a request reports (enough to learn the nodes without
// an agent; a request of thousands of new names rebuilds the set from the index instead).
const maxMissed = 1024

// jsonScanner is a strict RFC 8259 validator that reports value boundaries.
type jsonScanner struct {
	b     []byte
	i     int
	depth int
	// known interns node names (nodeName); missed collects the plain names not found there.
	known  nameSet
	missed []string
	// scratch, when large enough, holds the names of NodeNames and their refs.
	scratch *nameScratch
	// chunks and chunkMinBytes: how a large Nodes.items array is scanned (itemsInChunks).
	chunks, chunkMinBytes int
}

// maxDepth matches encoding/json's nesting limit.
const maxDepth = 10000

func (p *jsonScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *jsonScanner) ws() { p.i = skipWS(p.b, p.i) }

// skipWS returns the index of the first non-whitespace byte at or after i. The scanner's
// hot loops work on a local index and slice rather than on p.i: a field behind a pointer
// is loaded and stored on every iteration, which made scanning four times slower.
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// value validates one value starting at p.i (after whitespace). Nested containers are
// walked in a loop with a stack of closers rather than by recursion through members and
// elements: most of a full-Node body (every Node's spec and status) only needs validating,
// and the per-value closure calls of the structured walk cost more than the bytes.
func (p *jsonScanner) value() error {
	b, i := p.b, p.i
	var closers [64]byte // the open containers' closing bytes, innermost last
	stack := closers[:0]
	fail := func(at int, format string, args ...any) error {
		p.i = at
		return p.errorf(format, args...)
	}
	for {
		// A value starts at i.
		if i >= len(b) {
			return fail(i, "unexpected end of input")
		}
		switch c := b[i]; {
		case c == '{' || c == '[':
			if p.depth+len(stack)+1 > maxDepth {
				return fail(i, "nested too deeply")
			}
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			stack = append(stack, closer)
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == closer {
				i++
				stack = stack[:len(stack)-1]
				break
			}
			if closer == '}' {
				var err error
				if i, err = p.objectKey(i); err != nil {
					return err
				}
			}
			continue
		case c == '"':
			j, _, msg := scanString(b, i)
			if msg != "" {
				return fail(j, "%s", msg)
			}
			i = j
		case c == '-' || c >= '0' && c <= '9':
			p.i = i
			if err := p.number(); err != nil {
				return err
			}
			i = p.i
		case c == 't' || c == 'f' || c == 'n':
			lit := "null"
			if c == 't' {
				lit = "true"
			} else if c == 'f' {
				lit = "false"
			}
			if !bytes.HasPrefix(b[i:], []byte(lit)) {
				return fail(i, "bad literal")
			}
			i += len(lit)
		default:
			return fail(i, "unexpected character %q", c)
		}
		// A value ended at i: close containers until one continues with ','.
		for {
			if len(stack) == 0 {
				p.i = i
				return nil
			}
			i = skipWS(b, i)
			closer := stack[len(stack)-1]
			if i >= len(b) {
				kind := "object"
				if closer == ']' {
					kind = "array"
				}
				return fail(i, "unterminated %s", kind)
			}
			if b[i] == closer {
				i++
				stack = stack[:len(stack)-1]
				continue
			}
			if b[i] != ',' {
				kind := "object"
				if closer == ']' {
					kind = "array"
				}
				return fail(i, "expected ',' or '%c' in %s", closer, kind)
			}
			i = skipWS(b, i+1)
			if closer == '}' {
				var err error
				if i, err = p.objectKey(i); err != nil {
					return err
				}
			}
			break
		}
	}
}

// objectKey checks `"key" :` at i (after whitespace) and returns the index of the value
// after it (after whitespace).
func (p *jsonScanner) objectKey(i int) (int, error) {
	b := p.b
	if i >= len(b) {
		p.i = i
		return i, p.errorf("unexpected end of input")
	}
	if b[i] != '"' {
		p.i = i
		return i, p.errorf("expected a string key")
	}
	j, _, msg := scanString(b, i)
	if msg != "" {
		p.i = j
		return j, p.errorf("%s", msg)
	}
	if j < len(b) && b[j] == ':' {
		return skipWS(b, j+1), nil
	}
	j = skipWS(b, j)
	if j >= len(b) || b[j] != ':' {
		p.i = j
		return j, p.errorf("expected ':' after object key")
	}
	return skipWS(b, j+1), nil
}

// members validates an object starting at p.i ('{'). For each member it calls fn with
// p.i at the value; fn must consume exactly that value (p.value() or a parser of its own).
func (p *jsonScanner) members(fn func(key []byte) error) error {
	return p.container('}', "object", func() error {
		if p.b[p.i] != '"' {
			return p.errorf("expected a string key")
		}
		ks := p.i
		if _, err := p.str(); err != nil {
			return err
		}
		key := p.b[ks:p.i]
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return p.errorf("expected ':' after object key")
		}
		p.i++
		p.ws()
		if p.i >= len(p.b) {
			return p.errorf("unexpected end of input")
		}
		return fn(key)
	})
}

// elements validates an array starting at p.i ('['), calling fn with p.i at each
// element; fn must consume it.
func (p *jsonScanner) elements(fn func() error) error { return p.container(']', "array", fn) }

// container walks the object or array whose opening byte is at p.i, to its closer: it
// bounds the nesting depth and calls item with p.i at each member (after whitespace); item
// must consume the member.
func (p *jsonScanner) container(closer byte, kind string, item func() error) error {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf("nested too deeply")
	}
	p.i++ // '{' or '['
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == closer {
		p.i++
		p.depth--
		return nil
	}
	for {
		p.ws()
		if p.i >= len(p.b) {
			return p.errorf("unexpected end of input")
		}
		if err := item(); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) {
			return p.errorf("unterminated %s", kind)
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case closer:
			p.i++
			p.depth--
			return nil
		default:
			return p.errorf("expected ',' or '%c' in %s", closer, kind)
		}
	}
}

// stringValue consumes a string value and returns it decoded.
func (p *jsonScanner) stringValue() (string, error) {
	start := p.i
	escaped, err := p.str()
	if err != nil {
		return "", err
	}
	if raw := p.b[start+1 : p.i-1]; !escaped && utf8.Valid(raw) {
		return string(raw), nil
	}
	// Escapes, or invalid UTF-8 (which encoding/json turns into U+FFFD).
	var s string
	if err := json.Unmarshal(p.b[start:p.i], &s); err != nil {
		return "", err
	}
	return s, nil
}

// nodeList parses a v1.NodeList at p.i ('{'): items stay raw byte spans, and each item's
// metadata.name is read on the way. A member that would be a type error in a v1.NodeList
// is an error; a document whose meaning depends on encoding/json's merge rules (a repeated
// key, a null item) sets merged.
func (p *jsonScanner) nodeList() (*rawNodeList, error) {
	l := &rawNodeList{}
	var items, kinds, versions, metas int
	err := p.members(func(key []byte) error {
		start := p.i
		c := p.b[p.i]
		switch {
		case keyIs(key, "items"):
			items++
			l.Items, l.names = l.Items[:0], l.names[:0]
			switch c {
			case 'n':
				return p.literal("null")
			case '[':
			default:
				return p.errorf("field Nodes.items must be an array")
			}
			if p.itemsInChunks(l) {
				return nil
			}
			return p.elements(func() error {
				itemStart := p.i
				name, null, err := p.nodeItem(len(l.Items))
				if err != nil {
					return err
				}
				if null {
					l.merged = true
				}
				l.Items = append(l.Items, p.b[itemStart:p.i])
				l.names = append(l.names, name)
				return nil
			})
		case keyIs(key, "kind"), keyIs(key, "apiVersion"):
			field := &l.Kind
			if keyIs(key, "kind") {
				kinds++
			} else {
				versions++
				field = &l.APIVersion
			}
			switch c {
			case 'n':
				return p.literal("null")
			case '"':
				var err error
				*field, err = p.stringValue()
				return err
			}
			return p.errorf("field Nodes.%s must be a string", key[1:len(key)-1])
		case keyIs(key, "metadata"):
			metas++
			if c != '{' && c != 'n' {
				return p.errorf("field Nodes.metadata must be an object")
			}
			if err := p.value(); err != nil {
				return err
			}
			l.Metadata = p.b[start:p.i]
			return nil
		}
		return p.value()
	})
	if items > 1 || kinds > 1 || versions > 1 || metas > 1 {
		l.merged = true
	}
	return l, err
}

// nodeItem parses one element of Nodes.items at p.i and returns its metadata.name as
// encoding/json would decode it into a v1.Node: the last string "name" of any "metadata"
// object; null for either leaves it as it was. Other types for those two are errors; the
// rest of the item is only validated as JSON. null reports a null element.
func (p *jsonScanner) nodeItem(index int) (name string, null bool, err error) {
	switch p.b[p.i] {
	case 'n':
		return "", true, p.literal("null")
	case '{':
	default:
		return "", false, p.errorf("Nodes.items[%d] is not an object", index)
	}
	err = p.members(func(k []byte) error {
		if !keyIs(k, "metadata") {
			return p.value()
		}
		switch p.b[p.i] {
		case 'n':
			return p.literal("null")
		case '{':
		default:
			return p.errorf("Nodes.items[%d].metadata is not an object", index)
		}
		return p.members(func(k2 []byte) error {
			if !keyIs(k2, "name") {
				return p.value()
			}
			switch p.b[p.i] {
			case 'n':
				return p.literal("null")
			case '"':
				var err error
				name, _, _, err = p.nodeName()
				return err
			}
			return p.errorf("Nodes.items[%d].metadata.name is not a string", index)
		})
	})
	return name, false, err
}

// str validates a string starting at its opening quote; escaped says whether it holds a
// backslash escape (the caller then needs encoding/json to decode it).
func (p *jsonScanner) str() (escaped bool, err error) {
	j, escaped, msg := scanString(p.b, p.i)
	p.i = j
	if msg != "" {
		return false, p.errorf("%s", msg)
	}
	return escaped, nil
}

// scanString validates the string whose opening quote is at i and returns the index after
// its closing quote, or the offset of the problem and a message. Like json.Valid it does
// not check UTF-8 (encoding/json decodes invalid bytes to U+FFFD).
//
// The bytes between escapes are skipped eight at a time: a word is tested at once for a
// '"', a '\\' or a control byte (the classic "has a zero byte / a byte below n" bit tricks),
// so the long plain runs of a Node's strings cost about a cycle per byte.
func scanString(b []byte, i int) (end int, escaped bool, msg string) {
	i++ // opening quote
	for {
		for i+8 <= len(b) {
			w := binary.LittleEndian.Uint64(b[i:])
			if m := specialBytes(w); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				if b[i] == '"' {
					return i + 1, escaped, ""
				}
				break
			}
			i += 8
		}
		for i < len(b) && strPlain[b[i]] {
			i++
		}
		if i >= len(b) {
			return i, false, "unterminated string"
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, escaped, ""
		case c == '\\':
			escaped = true
			i++
			if i >= len(b) {
				return i, false, "unterminated escape"
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(b) {
					return i, false, "short \\u escape"
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return i, false, "bad \\u escape"
					}
				}
				i += 5
			default:
				return i, false, fmt.Sprintf("bad escape \\%c", b[i])
			}
		default: // c < 0x20
			return i, false, "control character in string"
		}
	}
}

const (
	lows  = 0x0101010101010101
	highs = 0x8080808080808080
)

// specialBytes marks (with the byte's high bit) the bytes of the little-endian word w that
// are '"', '\\' or below 0x20. Marks above the lowest one may be false (a borrow), so a
// caller uses only the lowest.
func specialBytes(w uint64) uint64 {
	q := w ^ ('"' * lows)
	s := w ^ ('\\' * lows)
	return ((q-lows)&^q | (s-lows)&^s | (w-0x20*lows)&^w) & highs
}

// strPlain marks the bytes a string may hold as they are (not '"', '\\' or a control).
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func (p *jsonScanner) number() error {
	if p.b[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return p.errorf("bad number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return p.errorf("bad number fraction")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return p.errorf("bad number exponent")
		}
	}
	return nil
}

func (p *jsonScanner) literal(lit string) error {
	if !bytes.HasPrefix(p.b[p.i:], []byte(lit)) {
		return p.errorf("bad literal")
	}
	p.i += len(lit)
	return nil
}
