package datera

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera/fake"
)

const internalIQN = "iqn.1993-08.org.debian:01:internal"

func internalClient(t *testing.T, opts fake.Options) (*Client, *fake.Server) {
	t.Helper()
	s, err := fake.New(opts)
	require.NoError(t, err)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	c, err := New(Config{Endpoint: hs.URL, Username: fake.DefaultUser, Password: fake.DefaultPassword,
		Retry: Retry{Initial: time.Millisecond, Max: 2 * time.Millisecond, Attempts: 5}})
	require.NoError(t, err)
	return c, s
}

// The transport-level rule, isolated from the operations' own 409 handling: a POST that failed
// on the connection and then meets 409 returns the GET of resolvePath — and only then.
func TestPOSTConflictResolution(t *testing.T) {
	post := func(resolve string) request {
		var in Initiator
		return request{method: http.MethodPost, path: "/initiators", out: &in, resolvePath: resolve,
			body: map[string]any{"id": internalIQN, "name": "internal", "force": true}}
	}
	tests := []struct {
		name      string
		preCreate bool // the initiator exists before the POST
		drop      bool // the first POST's response is lost
		resolve   string
		wantErr   error
		wantGETs  int
		wantPOSTs int
	}{
		{"lost response, then 409: resolved by GET", false, true, apiPath("initiators", internalIQN), nil, 1, 2},
		{"lost response, then 409, no resolve path: conflict", false, true, "", ErrConflict, 0, 2},
		{"plain 409 is a conflict even with a resolve path", true, false, apiPath("initiators", internalIQN), ErrConflict, 0, 1},
		{"no conflict", false, false, apiPath("initiators", internalIQN), nil, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := internalClient(t, fake.Options{})
			ctx := context.Background()
			if tt.preCreate {
				require.NoError(t, c.do(ctx, post("")))
			}
			if tt.drop {
				s.SetFault("POST /initiators", fake.Fault{DropResponses: 1})
			}
			s.ResetRequests()
			r := post(tt.resolve)
			err := c.do(ctx, r)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
				assert.Equal(t, internalIQN, r.out.(*Initiator).ID, "the entity is returned either way")
			}
			assert.Equal(t, tt.wantPOSTs, s.Requests("POST /initiators"))
			assert.Equal(t, tt.wantGETs, s.Requests("GET /initiators/{id}"))
		})
	}
}

func TestBackoff(t *testing.T) {
	r := Retry{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, Attempts: 5}
	tests := []struct {
		retry    int
		min, max time.Duration
	}{
		{1, 5 * time.Millisecond, 10 * time.Millisecond},
		{2, 10 * time.Millisecond, 20 * time.Millisecond},
		{4, 40 * time.Millisecond, 80 * time.Millisecond},
		{5, 50 * time.Millisecond, 100 * time.Millisecond},  // capped
		{70, 50 * time.Millisecond, 100 * time.Millisecond}, // no overflow
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.retry), func(t *testing.T) {
			for range 200 {
				b := r.backoff()
				var d time.Duration
				for range tt.retry {
					d = b.Step()
				}
				require.GreaterOrEqual(t, d, tt.min)
				require.LessOrEqual(t, d, tt.max)
			}
		})
	}
	def := Retry{}.withDefaults()
	assert.Equal(t, Retry{Initial: 250 * time.Millisecond, Max: 8 * time.Second, Attempts: 10}, def)
}

func TestRetryableTransportError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &netOpError{syscall.ECONNREFUSED}, true},
		{"reset", syscall.ECONNRESET, true},
		{"EOF", io.EOF, true},
		{"attempt timeout", context.DeadlineExceeded, true},
		{"unknown CA", fmt.Errorf("get: %w", x509.UnknownAuthorityError{}), false},
		{"certificate verification", &tls.CertificateVerificationError{Err: errors.New("bad")}, false},
		{"http to https", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, false},
		{"oversized response", &permanentError{ErrBadResponse}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, retryableTransportError(tt.err))
		})
	}
}

type netOpError struct{ err error }

func (e *netOpError) Error() string { return "dial: " + e.err.Error() }
func (e *netOpError) Unwrap() error { return e.err }
