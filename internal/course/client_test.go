package course

import (
	"slices"
	"testing"
)

func TestOrder(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  []string
	}{
		{"empty", nil, nil},
		{"plain names sort as their sequence",
			[]string{"node0000000010", "node0000000002", "node0000000009"},
			[]string{"node0000000002", "node0000000009", "node0000000010"}},
		// What a course client makes of protected names: the guid, not
		// the sequence, decides; this is why servers register plain ones.
		{"protected names sort by guid",
			[]string{"_c_b1-node0000000000", "_c_a2-node0000000001"},
			[]string{"_c_a2-node0000000001", "_c_b1-node0000000000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.names)
			if got := Order(in); !slices.Equal(got, tt.want) {
				t.Errorf("Order(%q) = %q, want %q", tt.names, got, tt.want)
			}
			if !slices.Equal(in, tt.names) {
				t.Errorf("Order changed its argument to %q", in)
			}
		})
	}
}

func TestAddrOf(t *testing.T) {
	tests := []struct {
		data string
		want string
	}{
		{"127.0.0.1:7000\x00", "127.0.0.1:7000"},
		{"127.0.0.1:7000", "127.0.0.1:7000"},
		{"127.0.0.1:7000\x00garbage", "127.0.0.1:7000"},
		{"\x00", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := AddrOf([]byte(tt.data)); got != tt.want {
			t.Errorf("AddrOf(%q) = %q, want %q", tt.data, got, tt.want)
		}
	}
}

func TestReadFromString(t *testing.T) {
	if Tail.String() != "tail" || Any.String() != "any" {
		t.Errorf("ReadFrom names: %q, %q", Tail, Any)
	}
}
