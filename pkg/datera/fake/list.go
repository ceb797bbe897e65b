package fake

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// list renders a collection with paging (offset, limit 0–1000), filtering ("name=x" or
// "match(name,regex)") and sorting ("name" or "-name"). v2.2 metadata is
// {total_count, request_count, offset, limit}; v2.1 is {total}.
func list(c *call, path string, items []any) result {
	q := c.r.URL.Query()
	if f := q.Get("filter"); f != "" {
		keep, err := filterFunc(f)
		if err != nil {
			return fail(err)
		}
		filtered := items[:0:0]
		for _, it := range items {
			if keep(it) {
				filtered = append(filtered, it)
			}
		}
		items = filtered
	}
	switch srt := q.Get("sort"); srt {
	case "":
	case "name", "-name":
		sort.SliceStable(items, func(i, j int) bool {
			a, b := nameOf(items[i]), nameOf(items[j])
			if srt == "-name" {
				return a > b
			}
			return a < b
		})
	default:
		return fail(invalidRequest("unsupported sort %q (supported: name, -name)", srt))
	}
	offset, limit := 0, defaultListLimit
	var v checks
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			v = append(v, fmt.Sprintf("offset: %q is not a non-negative integer", s))
		}
		offset = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxListLimit {
			v = append(v, fmt.Sprintf("limit: %q is outside 0-%d", s, maxListLimit))
		}
		if n > 0 {
			limit = n
		}
	}
	if err := v.err(); err != nil {
		return fail(err)
	}
	total := len(items)
	start, end := min(offset, total), min(offset+limit, total)
	page := append([]any{}, items[start:end]...)
	meta := map[string]any{"total_count": total, "request_count": len(page), "offset": offset, "limit": limit}
	if c.version == "v2.1" {
		meta = map[string]any{"total": total}
	}
	return result{status: http.StatusOK, path: path, data: page, meta: meta}
}

var (
	reFilterEq    = regexp.MustCompile(`^name=([^,()]*)$`)
	reFilterMatch = regexp.MustCompile(`^match\(name,(.*)\)$`)
)

func filterFunc(f string) (func(any) bool, *apiError) {
	if strings.ContainsAny(f, " \t") {
		return nil, invalidRequest("filter %q must not contain spaces", f)
	}
	if m := reFilterEq.FindStringSubmatch(f); m != nil {
		return func(it any) bool { return nameOf(it) == m[1] }, nil
	}
	if m := reFilterMatch.FindStringSubmatch(f); m != nil {
		re, err := regexp.Compile(m[1])
		if err != nil {
			return nil, invalidRequest("filter %q: bad regular expression: %v", f, err)
		}
		return func(it any) bool { return re.MatchString(nameOf(it)) }, nil
	}
	return nil, invalidRequest("unsupported filter %q (supported: name=<x>, match(name,<regex>))", f)
}

func nameOf(it any) string {
	if m, ok := it.(map[string]any); ok {
		if n, ok := m["name"].(string); ok {
			return n
		}
	}
	return ""
}
