package hub

import "strings"

// diffLine is one line of a line diff: Op is " " (both), "-" (only in
// the old text) or "+" (only in the new).
type diffLine struct {
	Op   string
	Text string
}

// maxDiffCells bounds the work of lineDiff's table (lines of the old
// text times lines of the new, after the common ends are trimmed).
const maxDiffCells = 4_000_000

// lineDiff returns the lines of a and b as a diff: a longest common
// subsequence of lines kept, the rest removed or added. Texts too large
// for the table show as all removed, then all added.
func lineDiff(a, b string) []diffLine {
	al, bl := splitLines(a), splitLines(b)
	var out []diffLine
	// Common head and tail.
	h := 0
	for h < len(al) && h < len(bl) && al[h] == bl[h] {
		h++
	}
	t := 0
	for t < len(al)-h && t < len(bl)-h && al[len(al)-1-t] == bl[len(bl)-1-t] {
		t++
	}
	for _, l := range al[:h] {
		out = append(out, diffLine{" ", l})
	}
	am, bm := al[h:len(al)-t], bl[h:len(bl)-t]
	n, m := len(am), len(bm)
	if n*m > maxDiffCells {
		for _, l := range am {
			out = append(out, diffLine{"-", l})
		}
		for _, l := range bm {
			out = append(out, diffLine{"+", l})
		}
	} else {
		// lcs[i][j]: the LCS length of am[i:] and bm[j:].
		lcs := make([][]int32, n+1)
		for i := range lcs {
			lcs[i] = make([]int32, m+1)
		}
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if am[i] == bm[j] {
					lcs[i][j] = lcs[i+1][j+1] + 1
				} else {
					lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
				}
			}
		}
		i, j := 0, 0
		for i < n && j < m {
			switch {
			case am[i] == bm[j]:
				out = append(out, diffLine{" ", am[i]})
				i, j = i+1, j+1
			case lcs[i+1][j] >= lcs[i][j+1]:
				out = append(out, diffLine{"-", am[i]})
				i++
			default:
				out = append(out, diffLine{"+", bm[j]})
				j++
			}
		}
		for ; i < n; i++ {
			out = append(out, diffLine{"-", am[i]})
		}
		for ; j < m; j++ {
			out = append(out, diffLine{"+", bm[j]})
		}
	}
	for _, l := range al[len(al)-t:] {
		out = append(out, diffLine{" ", l})
	}
	return out
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
