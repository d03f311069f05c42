"""Unit tests of the pure parts of ngx_upload_client: range reports, missing spans, segment
cutting, session ids, sizes, headers, Content-Disposition.

Run: python3 -m unittest discover -s clients/python
(tests/python_client.rs runs them too, and the client against real nginx).
"""

import os
import tempfile
import time
import unittest

import ngx_upload_client as c


class RangeReport(unittest.TestCase):
    def test_single_range_of_the_seed(self):
        self.assertEqual(c.parse_range_report("0-51200/511920"), ([(0, 51200)], 511920))

    def test_several_ranges_are_sorted_and_merged(self):
        spans, total = c.parse_range_report("200-299/1000,0-99/1000,100-149/1000")
        self.assertEqual((spans, total), ([(0, 149), (200, 299)], 1000))

    def test_spaces_and_a_bytes_unit_are_tolerated(self):
        self.assertEqual(c.parse_range_report(" bytes 0-9/10 "), ([(0, 9)], 10))
        self.assertEqual(c.parse_range_report("0-4/10, 6-9/10"), ([(0, 4), (6, 9)], 10))

    def test_empty_report_holds_nothing(self):
        self.assertEqual(c.parse_range_report(""), ([], None))

    def test_malformed_reports_are_refused(self):
        for bad in ["0-9", "a-b/10", "0-9/10,", "5-4/10", "0-10/10", "0-4/10,5-9/11", "-1-3/10"]:
            with self.subTest(report=bad), self.assertRaises(c.RangeReportError):
                c.parse_range_report(bad)


class Spans(unittest.TestCase):
    def test_merge_joins_overlapping_and_adjacent(self):
        self.assertEqual(c.merge_spans([(5, 9), (0, 4), (20, 30), (8, 12)]), [(0, 12), (20, 30)])
        self.assertEqual(c.merge_spans([]), [])

    def test_missing_of_nothing_held_is_the_whole_file(self):
        self.assertEqual(c.missing_spans([], 100), [(0, 99)])

    def test_missing_between_and_around_held_spans(self):
        held = [(10, 19), (50, 59)]
        self.assertEqual(c.missing_spans(held, 100), [(0, 9), (20, 49), (60, 99)])
        self.assertEqual(c.missing_spans([(0, 49), (60, 99)], 100), [(50, 59)])

    def test_missing_of_a_complete_file_is_empty(self):
        self.assertEqual(c.missing_spans([(0, 99)], 100), [])
        self.assertTrue(c.covers([(0, 49), (50, 99)], 100))
        self.assertFalse(c.covers([(0, 49), (51, 99)], 100))

    def test_missing_within_a_window(self):
        held = [(10, 19), (50, 59)]
        self.assertEqual(c.missing_spans(held, 100, 15, 55), [(20, 49)])
        self.assertEqual(c.missing_spans(held, 100, 12, 18), [])
        self.assertEqual(c.missing_spans(held, 100, 0, 5), [(0, 5)])
        self.assertEqual(c.missing_spans(held, 100, 55, 70), [(60, 70)])

    def test_missing_and_held_partition_the_file(self):
        # A brute-force model over many random held sets.
        import random

        rng = random.Random(6)
        for _ in range(300):
            total = rng.randint(1, 60)
            held = []
            for _ in range(rng.randint(0, 5)):
                a = rng.randrange(total)
                held.append((a, rng.randint(a, total - 1)))
            have = {i for a, b in held for i in range(a, b + 1)}
            missing = c.missing_spans(held, total)
            lacking = {i for a, b in missing for i in range(a, b + 1)}
            self.assertEqual(lacking, set(range(total)) - have, (held, total, missing))
            self.assertEqual(missing, c.merge_spans(missing))

    def test_split_cuts_each_span_into_segments(self):
        self.assertEqual(
            c.split_spans([(0, 9), (20, 24)], 4), [(0, 3), (4, 7), (8, 9), (20, 23), (24, 24)]
        )
        self.assertEqual(c.split_spans([(0, 99)], 1000), [(0, 99)])
        with self.assertRaises(ValueError):
            c.split_spans([(0, 1)], 0)


class SessionId(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "a file.bin")
        with open(self.path, "wb") as f:
            f.write(b"x" * 1000)

    def tearDown(self):
        self.dir.cleanup()

    def test_stable_and_valid(self):
        first = c.session_id_for(self.path)
        self.assertEqual(first, c.session_id_for(self.path))
        self.assertTrue(c.valid_session_id(first), first)
        self.assertEqual(len(first), 32)

    def test_changes_with_the_file_and_the_host(self):
        before = c.session_id_for(self.path)
        self.assertNotEqual(before, c.session_id_for(self.path, host="elsewhere"))
        st = os.stat(self.path)
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        self.assertNotEqual(before, c.session_id_for(self.path))
        other = os.path.join(self.dir.name, "other.bin")
        os.link(self.path, other)
        self.assertNotEqual(c.session_id_for(self.path), c.session_id_for(other))

    def test_valid_session_ids(self):
        for good in ["a", "1111215056", "A-b_9", "x" * 128]:
            self.assertTrue(c.valid_session_id(good), good)
        for bad in ["", "x" * 129, "a b", "a/b", "é", "a\n"]:
            self.assertFalse(c.valid_session_id(bad), bad)


class Arguments(unittest.TestCase):
    def test_sizes(self):
        self.assertEqual(c.parse_size("1048576"), 1 << 20)
        self.assertEqual(c.parse_size("512k"), 512 << 10)
        self.assertEqual(c.parse_size("4M"), 4 << 20)
        self.assertEqual(c.parse_size("2MiB"), 2 << 20)
        self.assertEqual(c.parse_size("1g"), 1 << 30)
        for bad in ["", "0", "-1", "1.5M", "4T", "M"]:
            with self.subTest(size=bad), self.assertRaises(ValueError):
                c.parse_size(bad)

    def test_headers(self):
        self.assertEqual(
            c.parse_header("Authorization: Bearer a:b"), ("Authorization", "Bearer a:b")
        )
        self.assertEqual(c.parse_header("X-Empty:"), ("X-Empty", ""))
        for bad in ["no colon", ": value", "Bad Name: v", "X: a\r\nInjected: 1"]:
            with self.subTest(header=bad), self.assertRaises(ValueError):
                c.parse_header(bad)

    def test_disposition(self):
        self.assertEqual(
            c.disposition("big.TXT", "file"), 'attachment; name="file"; filename="big.TXT"'
        )
        self.assertEqual(c.disposition("big.TXT"), 'attachment; filename="big.TXT"')
        self.assertEqual(
            c.disposition('été "1".txt', "f"),
            "attachment; name=\"f\"; filename=\"_t_ _1_.txt\"; "
            "filename*=UTF-8''%C3%A9t%C3%A9%20%221%22.txt",
        )

    def test_backoff_grows_and_is_capped(self):
        for n in range(1, 12):
            delay = c.backoff_delay(n, 0.5, cap=8.0)
            expected = min(8.0, 0.5 * 2 ** (n - 1))
            self.assertTrue(0.75 * expected <= delay <= expected, (n, delay))


class FileErrors(unittest.TestCase):
    def test_empty_file_is_refused(self):
        with tempfile.NamedTemporaryFile() as f:
            with self.assertRaises(c.UploadError) as caught:
                c.Uploader("http://127.0.0.1:1/upload", f.name)
            self.assertEqual(caught.exception.exit_code, c.EXIT_USAGE)

    def test_bad_url_is_refused(self):
        with tempfile.NamedTemporaryFile() as f:
            f.write(b"x")
            f.flush()
            with self.assertRaises(c.UploadError):
                c.Uploader("ftp://host/upload", f.name)


if __name__ == "__main__":
    unittest.main()
