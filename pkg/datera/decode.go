package datera

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// envelope wraps every v2.1+ success body except /login's.
type envelope struct {
	Tenant  string          `json:"tenant"`
	Path    string          `json:"path"`
	Version string          `json:"version"`
	Data    json.RawMessage `json:"data"`
}

// loginResponse is the body of PUT /login; it has no envelope.
type loginResponse struct {
	Key     string `json:"key"`
	Version string `json:"version"`
}

// readBody reads at most limit bytes; a longer body is an error, not a truncated success.
func readBody(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: response body exceeds %d bytes", ErrBadResponse, limit)
	}
	return b, nil
}

// decodeResponse interprets one HTTP response: a 2xx body is unwrapped from its envelope into out
// (nil out only checks the envelope); anything else becomes an *APIError.
func decodeResponse(method, path string, status int, body []byte, out any) error {
	if status < 200 || status > 299 {
		return decodeAPIError(method, path, status, body)
	}
	if err := decodeEnvelope(body, out); err != nil {
		return fmt.Errorf("datera %s %s: %w", method, path, err)
	}
	return nil
}

func decodeEnvelope(body []byte, out any) error {
	var env envelope
	if err := strictUnmarshal(body, &env); err != nil {
		return fmt.Errorf("%w: decoding envelope: %w", ErrBadResponse, err)
	}
	data := bytes.TrimSpace(env.Data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return fmt.Errorf("%w: envelope has no data", ErrBadResponse)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: decoding data: %w", ErrBadResponse, err)
	}
	return nil
}

// decodeLogin extracts the session key from a PUT /login response.
func decodeLogin(status int, body []byte) (string, error) {
	if status < 200 || status > 299 {
		return "", decodeAPIError("PUT", "/login", status, body)
	}
	var lr loginResponse
	if err := strictUnmarshal(body, &lr); err != nil {
		return "", fmt.Errorf("datera login: %w: %w", ErrBadResponse, err)
	}
	if lr.Key == "" {
		return "", fmt.Errorf("datera login: %w: response has no session key", ErrAuth)
	}
	return lr.Key, nil
}

// strictUnmarshal decodes exactly one JSON object; json.Unmarshal rejects trailing data.
func strictUnmarshal(body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return errors.New("empty body")
	}
	if trimmed[0] != '{' {
		return errors.New("body is not a JSON object")
	}
	return json.Unmarshal(trimmed, v)
}

// decodeAPIError builds an *APIError, tolerating bodies that are partial (a 503 may carry only
// "message"), mistyped or not JSON at all.
func decodeAPIError(method, path string, status int, body []byte) *APIError {
	e := &APIError{Method: method, Path: path, Status: status}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		e.Message = snippet(body)
		return e
	}
	_ = json.Unmarshal(fields["name"], &e.Name)
	_ = json.Unmarshal(fields["message"], &e.Message)
	var code json.Number
	if json.Unmarshal(fields["code"], &code) == nil {
		if n, err := code.Int64(); err == nil && n == int64(int(n)) {
			e.Code = int(n)
		}
	}
	var details []string
	if json.Unmarshal(fields["errors"], &details) == nil {
		e.Errors = details
	}
	return e
}

// snippet renders a non-JSON error body for a message: valid UTF-8, one line, bounded.
func snippet(body []byte) string {
	const max = 200
	s := strings.ToValidUTF8(string(body), "?")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
