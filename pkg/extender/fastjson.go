package extender

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// decodeArgs parses an ExtenderArgs body. It replaces json.Unmarshal for the top level
// because the body is mostly a list of thousands of node names (or Node objects), and
// encoding/json's reflective decoder spends most of a request's time there. It validates
// the whole document as strictly as json.Valid (fastjson_test.go fuzzes the two against
// each other), matches the keys Pod, Nodes and NodeNames case-insensitively and keeps the
// last of duplicate keys, as encoding/json does, decodes Pod with encoding/json, reads
// splits NodeNames into element spans and keeps Nodes raw.
func decodeArgs(b []byte, a *args) error {
	p := &jparser{b: b}
	p.ws()
	if p.i >= len(b) || b[p.i] != '{' {
		return p.errorf("ExtenderArgs must be a JSON object")
	}
	var pod, nodes, names []byte
	var list *rawNodeList
	if err := p.members(func(key []byte) error {
		start := p.i
		var err error
		switch {
		case keyIs(key, "Nodes") && p.i < len(b) && b[p.i] == '{':
			// Split the NodeList into items and read their names in this same pass.
			list, err = p.nodeList()
		default:
			err = p.value()
		}
		if err != nil {
			return err
		}
		switch {
		case keyIs(key, "Pod"):
			pod = b[start:p.i]
		case keyIs(key, "Nodes"):
			nodes = b[start:p.i]
			if b[start] != '{' {
				list = nil
			}
		case keyIs(key, "NodeNames"):
			names = b[start:p.i]
		}
		return nil
	}); err != nil {
		return err
	}
	p.ws()
	if p.i != len(b) {
		return p.errorf("data after the top-level object")
	}
	if pod != nil && !isNull(pod) {
		a.Pod = new(corev1.Pod)
		if err := json.Unmarshal(pod, a.Pod); err != nil {
			return fmt.Errorf("field Pod: %w", err)
		}
	}
	if nodes != nil && !isNull(nodes) {
		if nodes[0] != '{' || list == nil {
			return errors.New("field Nodes must be a NodeList object")
		}
		for i, n := range list.names {
			if n == "" {
				return fmt.Errorf("field Nodes.items[%d] has no metadata.name", i)
			}
		}
		a.Nodes, a.list = nodes, list
	}
	if names != nil && !isNull(names) {
		spans, err := stringSpans(names)
		if err != nil {
			return fmt.Errorf("field NodeNames: %w", err)
		}
		a.namesRaw, a.nameSpans, a.namesGiven = names, spans, true
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

// stringSpans splits a validated JSON array into the spans of its elements, which must
// all be strings.
func stringSpans(v []byte) ([][2]int, error) {
	if v[0] != '[' {
		return nil, errors.New("not an array")
	}
	p := &jparser{b: v, i: 1}
	out := make([][2]int, 0, bytes.Count(v, []byte{','})+1)
	p.ws()
	if p.i < len(v) && v[p.i] == ']' {
		return out, nil
	}
	for {
		p.ws()
		if p.i >= len(v) || v[p.i] != '"' {
			return nil, errors.New("must be an array of strings")
		}
		start := p.i
		if _, err := p.str(); err != nil {
			return nil, err
		}
		out = append(out, [2]int{start, p.i})
		p.ws()
		if p.i >= len(v) {
			return nil, errors.New("unterminated array")
		}
		switch v[p.i] {
		case ',':
			p.i++
		case ']':
			return out, nil
		default:
			return nil, errors.New("must be an array of strings")
		}
	}
}

// jparser is a strict RFC 8259 validator that reports value boundaries.
type jparser struct {
	b     []byte
	i     int
	depth int
}

// maxDepth matches encoding/json's nesting limit.
const maxDepth = 10000

func (p *jparser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *jparser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value validates one value starting at p.i (after whitespace).
func (p *jparser) value() error {
	if p.i >= len(p.b) {
		return p.errorf("unexpected end of input")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.members(p.anyValue)
	case c == '[':
		return p.array()
	case c == '"':
		_, err := p.str()
		return err
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	default:
		return p.errorf("unexpected character %q", c)
	}
}

// members validates an object starting at p.i ('{'). For each member it calls fn with
// p.i at the value; fn must consume exactly that value (p.value() or a parser of its own).
func (p *jparser) members(fn func(key []byte) error) error {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf("nested too deeply")
	}
	p.i++ // '{'
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		p.depth--
		return nil
	}
	for {
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
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
		if err := fn(key); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) {
			return p.errorf("unterminated object")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			p.depth--
			return nil
		default:
			return p.errorf("expected ',' or '}' in object")
		}
	}
}

func (p *jparser) anyValue([]byte) error { return p.value() }

// elements validates an array starting at p.i ('['), calling fn with p.i at each
// element; fn must consume it.
func (p *jparser) elements(fn func() error) error {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf("nested too deeply")
	}
	p.i++ // '['
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		p.depth--
		return nil
	}
	for {
		p.ws()
		if p.i >= len(p.b) {
			return p.errorf("unexpected end of input")
		}
		if err := fn(); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) {
			return p.errorf("unterminated array")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			p.depth--
			return nil
		default:
			return p.errorf("expected ',' or ']' in array")
		}
	}
}

// stringValue consumes a string value and returns it decoded.
func (p *jparser) stringValue() (string, error) {
	start := p.i
	escaped, err := p.str()
	if err != nil {
		return "", err
	}
	if !escaped {
		return string(p.b[start+1 : p.i-1]), nil
	}
	var s string
	if err := json.Unmarshal(p.b[start:p.i], &s); err != nil {
		return "", err
	}
	return s, nil
}

// nodeList parses a v1.NodeList at p.i ('{'): items stay raw byte spans, and each item's
// metadata.name is read on the way.
func (p *jparser) nodeList() (*rawNodeList, error) {
	l := &rawNodeList{}
	err := p.members(func(key []byte) error {
		start := p.i
		switch {
		case keyIs(key, "items") && p.b[p.i] == '[':
			return p.elements(func() error {
				itemStart := p.i
				if p.b[p.i] != '{' {
					return p.errorf("Nodes.items[%d] is not an object", len(l.Items))
				}
				name := ""
				err := p.members(func(k []byte) error {
					if !keyIs(k, "metadata") || p.b[p.i] != '{' {
						return p.value()
					}
					return p.members(func(k2 []byte) error {
						if !keyIs(k2, "name") || p.b[p.i] != '"' {
							return p.value()
						}
						var err error
						name, err = p.stringValue()
						return err
					})
				})
				if err != nil {
					return err
				}
				l.Items = append(l.Items, p.b[itemStart:p.i])
				l.names = append(l.names, name)
				return nil
			})
		case keyIs(key, "kind") && p.b[p.i] == '"':
			var err error
			l.Kind, err = p.stringValue()
			return err
		case keyIs(key, "apiVersion") && p.b[p.i] == '"':
			var err error
			l.APIVersion, err = p.stringValue()
			return err
		case keyIs(key, "metadata"):
			if err := p.value(); err != nil {
				return err
			}
			l.Metadata = p.b[start:p.i]
			return nil
		}
		return p.value()
	})
	return l, err
}

func (p *jparser) array() error {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf("nested too deeply")
	}
	p.i++ // '['
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		p.depth--
		return nil
	}
	for {
		p.ws()
		if err := p.value(); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) {
			return p.errorf("unterminated array")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			p.depth--
			return nil
		default:
			return p.errorf("expected ',' or ']' in array")
		}
	}
}

// str validates a string starting at its opening quote; escaped says whether it holds a
// backslash escape (the caller then needs encoding/json to decode it).
func (p *jparser) str() (escaped bool, err error) {
	p.i++ // opening quote
	for p.i < len(p.b) {
		// Skip the bytes that need no attention in one tight loop.
		for p.i < len(p.b) && strPlain[p.b[p.i]] {
			p.i++
		}
		if p.i >= len(p.b) {
			break
		}
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return escaped, nil
		case c == '\\':
			escaped = true
			p.i++
			if p.i >= len(p.b) {
				return false, p.errorf("unterminated escape")
			}
			switch p.b[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				if p.i+4 >= len(p.b) {
					return false, p.errorf("short \\u escape")
				}
				for _, h := range p.b[p.i+1 : p.i+5] {
					if !isHex(h) {
						return false, p.errorf("bad \\u escape")
					}
				}
				p.i += 5
			default:
				return false, p.errorf("bad escape \\%c", p.b[p.i])
			}
		case c < 0x20:
			return false, p.errorf("control character in string")
		default:
			p.i++
		}
	}
	return false, p.errorf("unterminated string")
}

// strPlain marks the bytes a string may hold as they are (not '"', '\\' or a control).
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func (p *jparser) number() error {
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

func (p *jparser) literal(lit string) error {
	if !bytes.HasPrefix(p.b[p.i:], []byte(lit)) {
		return p.errorf("bad literal")
	}
	p.i += len(lit)
	return nil
}
