package main

import (
	"slices"
	"testing"

	"stellar.dev/api/gossipapi"
)

func TestSyncCandidates_skipsPeersPublishingTheSameDigest(t *testing.T) {
	m := func(name, status, peer, dg string) gossipapi.Member {
		tags := map[string]string{}
		if dg != "" {
			tags[tagDigest] = dg
		}
		return gossipapi.Member{Name: name, Status: status, PeerAPI: peer, Tags: tags}
	}
	members := []gossipapi.Member{
		m("a", gossipapi.StatusAlive, "a:7947", "0000abcd"),
		m("b", gossipapi.StatusAlive, "b:7947", "0000abcd"),
		m("c", gossipapi.StatusAlive, "c:7947", "1111abcd"),
		m("d", gossipapi.StatusAlive, "d:7947", ""), // an older node: no tag
		m("e", gossipapi.StatusFailed, "e:7947", "9999abcd"),
		m("f", gossipapi.StatusSuspect, "f:7947", "9999abcd"),
		m("g", gossipapi.StatusAlive, "", "9999abcd"),
	}
	for _, tc := range []struct {
		name, mine, target string
		full               bool
		members            []gossipapi.Member
		want               []string
		same               int
	}{
		{"differing and untagged peers", "0000abcd", "", false, members, []string{"c:7947", "d:7947"}, 1},
		{"every peer in sync", "0000abcd", "", false, members[:2], nil, 1},
		{"full round takes every alive peer", "0000abcd", "", true, members, []string{"b:7947", "c:7947", "d:7947"}, 0},
		{"no digest of our own yet", "", "", false, members, []string{"b:7947", "c:7947", "d:7947"}, 0},
		{"a target alone, even in sync", "0000abcd", "b", false, members, []string{"b:7947"}, 0},
		{"a target not alive", "0000abcd", "e", false, members, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, same := syncCandidates("a", tc.mine, tc.target, tc.full, tc.members)
			if !slices.Equal(got, tc.want) || same != tc.same {
				t.Fatalf("syncCandidates = %v, %d same; want %v, %d", got, same, tc.want, tc.same)
			}
		})
	}
}

func TestDigestTag_eightHexDigits(t *testing.T) {
	for _, tc := range []struct {
		top  uint64
		want string
	}{
		{0, "00000000"},
		{0xdeadbeef, "deadbeef"},
		{0x1234567800000abc, "00000abc"},
	} {
		if got := digestTag(tc.top); got != tc.want {
			t.Errorf("digestTag(%#x) = %q, want %q", tc.top, got, tc.want)
		}
	}
}
