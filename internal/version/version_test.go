package version

import "testing"

func TestStampWins(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = "v9.9.9"
	if got := Get(); got != "v9.9.9" {
		t.Fatalf("Get() = %q with the stamp set", got)
	}
	Version = ""
	if got := Get(); got == "" {
		t.Fatal("Get() is empty without a stamp")
	}
}
