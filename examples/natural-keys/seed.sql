-- Scenario 4 seed for shop A (the source).
INSERT INTO customers (email, name, tier)
SELECT 'customer' || g || '@shop.example', 'Customer ' || g, (ARRAY['gold', 'silver', NULL])[1 + g % 3]
  FROM generate_series(1, 300) g;
INSERT INTO products (sku, title, price)
SELECT CASE WHEN g % 40 = 0 THEN NULL ELSE 'SKU-' || lpad(g::text, 5, '0') END, 'Product ' || g, (g * 1.25)::numeric(12, 2)
  FROM generate_series(1, 200) g;
INSERT INTO stock (warehouse, sku, bin, qty)
SELECT (ARRAY['north', 'south', 'east'])[1 + g % 3], 'SKU-' || lpad((1 + g % 150)::text, 5, '0'), g % 7, g
  FROM generate_series(1, 600) g;
