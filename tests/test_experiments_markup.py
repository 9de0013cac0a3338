"""Markup converters keep the prose and drop what only a renderer needs."""

from experiments.data.markup import (
    fortune_to_text,
    gcide_to_text,
    html_to_text,
    pod_to_text,
    rst_to_text,
)


def test_html_keeps_text_and_drops_tags_scripts_and_navigation():
    html = ("<html><head><title>T</title><style>p{}</style></head><body>"
            "<div class='navheader'><a>Prev</a><div>Up</div></div>"
            "<h1>Title</h1><p>Some <b>bold</b> text &amp; more.</p><script>x()</script>"
            "<div class='navfooter'>Next</div></body></html>")
    assert html_to_text(html) == "Title\n\nSome bold text & more."


def test_rst_drops_directives_adornments_and_unwraps_roles():
    rst = ("Heading\n=======\n\n.. note::\n   :class: x\n\nSee :func:`os.path.join` and ``code``\n"
           "and `the docs <https://x.org>`_.\n\n.. comment line\n")
    assert rst_to_text(rst) == "Heading\n\nSee os.path.join and code\nand the docs."


def test_rst_directive_options_are_dropped_but_its_body_kept():
    assert rst_to_text(".. note::\n   :class: x\n\n   Body text.") == "Body text."


def test_pod_expands_nested_formatting_codes_and_drops_commands():
    pod = "=head1 NAME\n\nperlfoo - B<bold C<code>> and L<text|perlvar> E<lt>x E<gt>X<index>\n\n=over 4\n\n=item * one\n\n=back\n\n=cut\n"
    assert pod_to_text(pod) == "NAME\n\nperlfoo - bold code and text <x >\n\none"


def test_pod_double_angle_codes_keep_inner_angles():
    assert pod_to_text("C<< $a <=> $b >>") == "$a <=> $b"


def test_gcide_drops_source_tags():
    entry = "Hiss \\Hiss\\, v. t.\n   1. To condemn.\n         [1913 Webster]\n   Syn: boo\n        [WordNet 1.5]"
    assert gcide_to_text(entry) == "Hiss \\Hiss\\, v. t.\n   1. To condemn.\n   Syn: boo"


def test_fortune_overstrike_is_removed():
    assert fortune_to_text("_\bB_\bo_\bl_\bd text") == "Bold text"
