package org.logsub.stack;

import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

import org.apache.lucene.analysis.CharArraySet;
import org.apache.lucene.analysis.LowerCaseFilter;
import org.apache.lucene.analysis.TokenFilter;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.email.UAX29URLEmailTokenizer;
import org.apache.lucene.analysis.pattern.PatternCaptureGroupTokenFilter;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.apache.lucene.analysis.tokenattributes.PositionIncrementAttribute;
import org.elasticsearch.index.analysis.AbstractTokenFilterFactory;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.Plugin;

/**
 * The Elasticsearch integ-test distribution ships without the analysis-common
 * module, but the security index (users, roles, API keys) names four of its
 * components in its settings, so the node cannot create that index and the
 * security API answers 500. These are the same components, over the same
 * Lucene classes, so the stack's secured node can create API keys.
 */
public class SecurityAnalysisPlugin extends Plugin implements AnalysisPlugin {

    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        return Map.of(
            "pattern_capture", AnalysisPlugin.requiresAnalysisSettings((index, env, name, settings) -> {
                List<String> regexes = settings.getAsList("patterns");
                Pattern[] patterns = regexes.stream().map(Pattern::compile).toArray(Pattern[]::new);
                boolean preserve = settings.getAsBoolean("preserve_original", true);
                return new AbstractTokenFilterFactory(name, settings) {
                    @Override
                    public TokenStream create(TokenStream input) {
                        return new PatternCaptureGroupTokenFilter(input, preserve, patterns);
                    }
                };
            }),
            "lowercase", (index, env, name, settings) -> new AbstractTokenFilterFactory(name, settings) {
                @Override
                public TokenStream create(TokenStream input) {
                    return new LowerCaseFilter(input);
                }
            },
            "unique", (index, env, name, settings) -> new AbstractTokenFilterFactory(name, settings) {
                @Override
                public TokenStream create(TokenStream input) {
                    return new UniqueFilter(input);
                }
            }
        );
    }

    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        return Map.of(
            "uax_url_email",
            (index, env, name, settings) -> TokenizerFactory.newFactory(name, UAX29URLEmailTokenizer::new)
        );
    }

    /** Drops a token whose text came earlier in the stream, as `unique` does. */
    static final class UniqueFilter extends TokenFilter {
        private final CharTermAttribute term = addAttribute(CharTermAttribute.class);
        private final PositionIncrementAttribute position = addAttribute(PositionIncrementAttribute.class);
        private final CharArraySet seen = new CharArraySet(8, false);

        UniqueFilter(TokenStream input) {
            super(input);
        }

        @Override
        public boolean incrementToken() throws java.io.IOException {
            int skipped = 0;
            while (input.incrementToken()) {
                char[] text = term.buffer();
                int length = term.length();
                if (!seen.contains(text, 0, length)) {
                    char[] copy = new char[length];
                    System.arraycopy(text, 0, copy, 0, length);
                    seen.add(copy);
                    position.setPositionIncrement(position.getPositionIncrement() + skipped);
                    return true;
                }
                skipped += position.getPositionIncrement();
            }
            return false;
        }

        @Override
        public void reset() throws java.io.IOException {
            super.reset();
            seen.clear();
        }
    }
}
