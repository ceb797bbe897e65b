package imagebuild

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/stretchr/testify/require"
)

// Every version the Makefile can stamp (git describe output, pkg/version's unstamped form)
// becomes a valid image tag.
func TestTagFor(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.3", "v1.2.3"},
		{"v1.2.3-4-g3f2a9c1-dirty", "v1.2.3-4-g3f2a9c1-dirty"},
		{"devel+3f2a9c1b0d4e-dirty", "devel-3f2a9c1b0d4e-dirty"},
		{"d602da5", "d602da5"},
		{"", "devel"},
		{"-x", "x"},
		{strings.Repeat("a", 200), strings.Repeat("a", 128)},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := TagFor(tc.in)
			require.Equal(t, tc.want, got)
			_, err := name.NewTag(Repository + ":" + got)
			require.NoError(t, err)
		})
	}
}
