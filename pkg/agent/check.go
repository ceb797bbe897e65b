package agent

// Check reads the CHAP files as a probe round does and reports the first one that is missing
// or empty (the files are re-read every round, so a Secret rotation needs no restart; the
// check mode, `flex agent --check`, reads them once up front).
func (c *CHAPFiles) Check() error {
	_, err := c.credentials()
	return err
}
