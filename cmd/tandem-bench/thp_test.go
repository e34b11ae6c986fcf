package main

import "testing"

func TestTHPModeOf(t *testing.T) {
	for in, want := range map[string]string{
		"always [madvise] never\n": "madvise",
		"[always] madvise never\n": "always",
		"always madvise [never]\n": "never",
		"":                         "",
		"always madvise never":     "",
	} {
		if got := thpModeOf(in); got != want {
			t.Errorf("thpModeOf(%q) = %q, want %q", in, got, want)
		}
	}
}
