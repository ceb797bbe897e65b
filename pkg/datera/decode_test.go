package datera

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeResponse(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantErr    error
		wantName   string
		wantCode   int
		wantMsg    string
		wantSizeGB int64
	}{
		{name: "envelope", status: 200, body: `{"tenant":"/root","path":"/app_instances/x","version":"v2.2","data":{"name":"pvc-a","storage_instances":[{"name":"storage-1","volumes":[{"name":"volume-1","size":7}]}]}}`, wantSizeGB: 7},
		{name: "unknown fields are fine", status: 200, body: `{"data":{"name":"pvc-a","new_field":{"x":1}},"metadata":{}}`},
		{name: "empty body", status: 200, body: ``, wantErr: ErrBadResponse},
		{name: "not JSON", status: 200, body: `<html>ok</html>`, wantErr: ErrBadResponse},
		{name: "array", status: 200, body: `[{"data":{}}]`, wantErr: ErrBadResponse},
		{name: "no data", status: 200, body: `{"tenant":"/root"}`, wantErr: ErrBadResponse},
		{name: "null data", status: 200, body: `{"data":null}`, wantErr: ErrBadResponse},
		{name: "trailing brace", status: 200, body: `{"data":{}}}`, wantErr: ErrBadResponse}, // found by the fuzzer
		{name: "trailing garbage", status: 200, body: `{"data":{}} {"data":{}}`, wantErr: ErrBadResponse},
		{name: "mistyped data", status: 200, body: `{"data":{"storage_instances":[{"volumes":[{"size":"big"}]}]}}`, wantErr: ErrBadResponse},
		{name: "truncated", status: 200, body: `{"data":{"name":"pvc`, wantErr: ErrBadResponse},
		{name: "404 NotFoundError", status: 404, body: `{"name":"NotFoundError","code":4,"http":404,"message":"app_instance x does not exist"}`,
			wantErr: ErrNotFound, wantName: NameNotFound, wantCode: 4, wantMsg: "app_instance x does not exist"},
		{name: "422 with details", status: 422, body: `{"name":"ValidationFailedError","code":11,"message":"bad","errors":["name: too short"]}`,
			wantErr: ErrValidation, wantName: NameValidationFailed, wantCode: 11, wantMsg: "bad"},
		{name: "503 with only a message", status: 503, body: `{"message":"busy"}`, wantErr: ErrUnavailable, wantMsg: "busy"},
		{name: "500 still initializing", status: 500, body: `{"message":"REST server is still initializing, retry"}`, wantErr: ErrUnavailable},
		{name: "500 other", status: 500, body: `{"name":"InternalError","message":"boom"}`, wantName: "InternalError", wantMsg: "boom"},
		{name: "502 HTML from a proxy", status: 502, body: "<html>\n<body>Bad   gateway</body></html>", wantMsg: "<html> <body>Bad gateway</body></html>"},
		{name: "code of the wrong type", status: 409, body: `{"name":"ConflictError","code":"x","message":"dup"}`, wantErr: ErrConflict, wantName: NameConflict, wantMsg: "dup"},
		{name: "fractional code", status: 409, body: `{"name":"ConflictError","code":1.5}`, wantErr: ErrConflict, wantName: NameConflict},
		{name: "401", status: 401, body: `{"name":"AuthFailedError","message":"The key provided with the request does not correspond to a valid session."}`, wantErr: ErrAuth, wantName: NameAuthFailed},
		{name: "403 is auth too", status: 403, body: `{"name":"PermissionDeniedError"}`, wantErr: ErrAuth, wantName: NamePermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ai AppInstance
			err := decodeResponse("GET", "/app_instances/x", tt.status, []byte(tt.body), &ai)
			if tt.status >= 200 && tt.status < 300 {
				if tt.wantErr != nil {
					require.ErrorIs(t, err, tt.wantErr)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, "pvc-a", ai.Name)
				assert.Equal(t, tt.wantSizeGB, ai.SizeGiB())
				return
			}
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, tt.status, apiErr.Status)
			assert.Equal(t, tt.wantName, apiErr.Name)
			assert.Equal(t, tt.wantCode, apiErr.Code)
			if tt.wantMsg != "" {
				assert.Equal(t, tt.wantMsg, apiErr.Message)
			}
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			}
			assert.Contains(t, err.Error(), "GET /app_instances/x")
		})
	}
}

func TestDecodeLogin(t *testing.T) {
	key, err := decodeLogin(200, []byte(`{"key":"dd2469de081346c28ac100e071709403","version":"v2.2","request_time":1}`))
	require.NoError(t, err)
	assert.Equal(t, "dd2469de081346c28ac100e071709403", key)

	_, err = decodeLogin(200, []byte(`{"version":"v2.2"}`))
	require.ErrorIs(t, err, ErrAuth, "no key is an auth failure (PYSDK does the same)")
	_, err = decodeLogin(200, []byte(`{"key":`))
	require.ErrorIs(t, err, ErrBadResponse)
	_, err = decodeLogin(401, []byte(`{"name":"AuthFailedError","message":"bad credentials"}`))
	require.ErrorIs(t, err, ErrAuth)
}

func TestSnippetIsBounded(t *testing.T) {
	s := snippet([]byte(strings.Repeat("é", 500) + "\xff"))
	assert.True(t, utf8.ValidString(s))
	assert.LessOrEqual(t, len(s), 200+len("…"))
}

// hasDataMember reports a top-level "data" key (encoding/json matches keys case-insensitively).
func hasDataMember(body []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return false
	}
	for k, v := range m {
		if strings.EqualFold(k, "data") && string(v) != "null" {
			return true
		}
	}
	return false
}

// FuzzDecodeResponse feeds arbitrary statuses and bodies to the response decoding: it must never
// panic, a non-2xx status must always give an *APIError carrying that status, and a 2xx success
// must have come from a JSON object with data.
func FuzzDecodeResponse(f *testing.F) {
	seeds := []struct {
		status int
		body   string
	}{
		{200, `{"tenant":"/root","path":"/app_instances/x","version":"v2.2","data":{"name":"a","storage_instances":[{"name":"storage-1","access":{"iqn":"iqn.x","ips":["1.2.3.4"]},"acl_policy":{"initiators":[{"path":"/initiators/x","tenant":"/root"}]},"volumes":[{"name":"volume-1","size":1,"performance_policy":{"total_iops_max":1}}]}]}}`},
		{200, `{"data":[{"name":"a"}],"metadata":{"total_count":1}}`},
		{200, `{"key":"dd2469de081346c28ac100e071709403"}`},
		{200, `{"data":null}`},
		{200, `{"data":{"size":1e400}}`},
		{200, `{"data":{"storage_instances":{"storage-1":{}}}}`},
		{404, `{"name":"NotFoundError","code":4,"http":404,"message":"x does not exist","errors":["a"]}`},
		{503, `{"message":"busy"}`},
		{500, `{"message":"REST server is still initializing"}`},
		{502, "<html>bad gateway</html>"},
		{409, `{"name":1,"code":"x","errors":"y"}`},
		{200, "\x00\xff{"},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 599 {
			status = 100 + (status%500+500)%500
		}
		for _, out := range []any{&AppInstance{}, &Initiator{}, &ACLPolicy{}, &PerformancePolicy{}, &AppTemplate{}, nil} {
			err := decodeResponse("GET", "/x", status, body, out)
			if status < 200 || status > 299 {
				var apiErr *APIError
				if !errors.As(err, &apiErr) || apiErr.Status != status {
					t.Fatalf("status %d: want *APIError with that status, got %v", status, err)
				}
				_ = apiErr.Error()
				continue
			}
			if err == nil && !hasDataMember(body) {
				t.Fatalf("success without a data member: %q", body)
			}
			if err != nil && !errors.Is(err, ErrBadResponse) {
				t.Fatalf("2xx decoding failure must be ErrBadResponse, got %v", err)
			}
		}
		key, err := decodeLogin(status, body)
		if err == nil && key == "" {
			t.Fatal("login succeeded without a key")
		}
	})
}
