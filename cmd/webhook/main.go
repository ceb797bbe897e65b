// Command webhook is petfabric's mutating admission webhook: it pins Datera-bound claim
// templates of StatefulSets to a Datera StorageClass and pre-creates one FlexVolume
// PersistentVolume per ordinal (see ARCHITECTURE.md).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "usage: webhook [flags]")
	fmt.Fprintln(os.Stderr, "\nThe petfabric admission webhook. It has no modes yet in this build.")
	os.Exit(2)
}
