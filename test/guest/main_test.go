package guest

import (
	"os"
	"testing"
)

// TestMain removes the flex binaries FlexBinary built for this process.
func TestMain(m *testing.M) {
	code := m.Run()
	if flexBuild.dir != "" {
		_ = os.RemoveAll(flexBuild.dir)
	}
	os.Exit(code)
}
