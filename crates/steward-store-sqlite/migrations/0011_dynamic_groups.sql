-- Dynamic groups (steward_core::group_rule): a group with a rule has as members the devices whose
-- facts the rule matches. The rule is its JSON text (GroupRule's shape, validated by core before
-- it is written); NULL: a static group, members by assignment.
ALTER TABLE groups ADD COLUMN rule TEXT;
