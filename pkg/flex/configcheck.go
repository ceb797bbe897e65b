package flex

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

// CheckConfigFile reads and validates the node config at path as the driver reads its own
// (LoadConfig): unknown fields refused, defaults applied, every value checked. `flex install
// --node-config` runs it before it installs the file where the driver reads it, and `--check`
// runs it alone.
func CheckConfigFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("node config: %w", err)
	}
	cfg := &NodeConfig{path: path}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("node config %s: %w", path, err)
	}
	if err := cfg.complete(); err != nil {
		return fmt.Errorf("node config %s: %w", path, err)
	}
	return nil
}
