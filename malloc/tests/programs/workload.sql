-- A relational workload whose output depends only on ROWS (substituted by the harness):
-- insert, index, group, join, update, delete and vacuum, each step printing a digest.
PRAGMA journal_mode = WAL;
PRAGMA cache_size = -65536;
CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, city TEXT, joined INTEGER);
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER, amount INTEGER, note TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ROWS / 10)
INSERT INTO customers
SELECT i, 'customer-' || i || '-' || hex(i * 2654435761 % 4294967296),
       'city' || (i * 7919 % 97), 2000 + i % 25 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ROWS)
INSERT INTO orders
SELECT i, 1 + (i * 48271 % (ROWS / 10)), (i * 16807 % 100000) / 100,
       printf('order %d %s', i, substr('abcdefghijklmnopqrstuvwxyz', 1 + i % 26, 1 + i % 13)) FROM n;
CREATE INDEX orders_by_customer ON orders(customer);
CREATE INDEX customers_by_city ON customers(city, joined);
SELECT 'counts', (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), (SELECT sum(amount) FROM orders);
SELECT 'by city', city, count(*), sum(o.amount), max(length(o.note))
  FROM customers c JOIN orders o ON o.customer = c.id
  GROUP BY city ORDER BY sum(o.amount) DESC LIMIT 5;
SELECT 'by year', joined, count(DISTINCT c.id), avg(o.amount)
  FROM customers c JOIN orders o ON o.customer = c.id
  GROUP BY joined ORDER BY joined LIMIT 5;
UPDATE orders SET amount = amount * 2, note = note || ' doubled' WHERE id % 3 = 0;
UPDATE customers SET name = upper(name) WHERE joined % 4 = 1;
DELETE FROM orders WHERE amount % 10 = 7;
SELECT 'after update', count(*), sum(amount), sum(length(note)) FROM orders;
SELECT 'top', c.name, sum(o.amount) AS total FROM customers c JOIN orders o ON o.customer = c.id
  GROUP BY c.id ORDER BY total DESC, c.id LIMIT 5;
SELECT 'notes', group_concat(DISTINCT substr(note, -8)) FROM (SELECT note FROM orders ORDER BY id LIMIT 40);
PRAGMA journal_mode = DELETE;
VACUUM;
PRAGMA integrity_check;
SELECT 'after vacuum', count(*), total(amount) FROM orders;
