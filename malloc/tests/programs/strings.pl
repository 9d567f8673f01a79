#!/usr/bin/perl
# A hash- and string-heavy workload whose output depends only on its argument: a word index
# built, rewritten and torn down again, with joins, splits, regexes, sprintf and sorting.
# usage: perl strings.pl [rounds]
use strict;
use warnings;

my $rounds = shift // 20000;
my (%index, %length_of, @lines);
my $seed = 12345;
sub next_rand { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed; }

my @syllables = qw(ka ri to na mu se lo pe vi da zu ho ne ga fi);
for my $i (1 .. $rounds) {
    my $words = 3 + next_rand() % 9;
    my @w = map { join '', map { $syllables[next_rand() % @syllables] } 1 .. 1 + next_rand() % 4 } 1 .. $words;
    my $line = sprintf "%06d: %s", $i, join ' ', @w;
    push @lines, $line;
    for my $w (@w) {
        push @{ $index{$w} }, $i;
        $length_of{$w} = length $w;
    }
    if ($i % 7 == 0) {
        my $victim = $lines[ next_rand() % @lines ];
        (my $upper = $victim) =~ s/(\w+)/\u$1/g;
        $lines[ next_rand() % @lines ] = $upper . ' ' . reverse($victim);
    }
}

my %by_first;
for my $line (@lines) {
    my (undef, $rest) = split /: /, $line, 2;
    next unless defined $rest;
    my @parts = split ' ', $rest;
    push @{ $by_first{ lc substr($parts[0], 0, 2) } }, scalar @parts;
}
my $text = join "\n", @lines;
my $vowels = () = $text =~ /[aeiou]/g;
my %count;
$count{$_}++ for $text =~ /\b(\w{4,6})\b/g;

my @common = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0 .. 9];
print "lines ", scalar @lines, " words ", scalar keys %index, " vowels $vowels\n";
printf "%-10s %6d\n", $_, $count{$_} for @common;
for my $k (sort keys %by_first) {
    my $sum = 0;
    $sum += $_ for @{ $by_first{$k} };
    printf "%s %d %d\n", $k, scalar @{ $by_first{$k} }, $sum;
}
my $checksum = unpack '%32C*', $text;
my $postings = 0;
$postings += @{ $index{$_} } for keys %index;
print "checksum $checksum postings $postings\n";
delete $index{$_} for grep { $length_of{$_} % 2 } keys %length_of;
print "left ", scalar keys %index, "\n";
