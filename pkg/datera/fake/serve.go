package fake

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// httpPort is the Datera API's plain-HTTP port (datera.HTTPPort; pkg/datera's own tests
// import this package, so it cannot import pkg/datera back).
const httpPort = 7717

// ServeBackstore serves h over HTTP on port 7717 of a random 127.x.y.z address, where a
// PersistentVolume's backstoreServer "host:7717" reaches it (datera.EndpointForBackstore
// accepts only the real API ports), and returns that host:port. Tests running in parallel get
// distinct addresses. The server closes when the test ends.
func ServeBackstore(t testing.TB, h http.Handler) string {
	t.Helper()
	for range 50 {
		ip := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(256), 1+rand.IntN(254))
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(httpPort)))
		if err != nil {
			continue
		}
		srv := httptest.NewUnstartedServer(h)
		srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		t.Cleanup(srv.Close)
		return l.Addr().String()
	}
	t.Fatalf("no free loopback address for port %d", httpPort)
	return ""
}
